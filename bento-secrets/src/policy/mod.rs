//! `secrets.toml` read into types: who gets which secret, the templates, each activated file's attributes (owner, group, mode, path, units), generator kinds, and where in the TOML text a problem is.

pub(crate) mod directory;
pub mod file_attrs;
pub mod generator_kind;
pub mod mode;
pub mod rules;
pub mod template;
pub mod toml_text;
