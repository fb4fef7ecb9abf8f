//! One behaviour suite per stage trait that every platform must pass.
