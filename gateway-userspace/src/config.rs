//! The declarative, AWS-shaped configuration file (TOML) and its validation.
//! (Being written: see the helper's task.)
