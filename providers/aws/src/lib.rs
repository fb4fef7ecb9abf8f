//! The aws platform.
