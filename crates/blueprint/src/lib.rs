//! The blueprint language: YAML with source spans → validated, typed [`Blueprint`].

pub mod model;

pub use model::*;
