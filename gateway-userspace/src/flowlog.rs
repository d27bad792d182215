//! VPC-Flow-Log-style records.
//! (Being written: see the helper's task.)
