//! Helpers of the packet tests: the namespace guard, the gateway under test, frame builders and
//! the empty-program baseline.

pub mod empty;
pub mod frames;
pub mod gateway;
pub mod netns;
