//! What admins run on secrets: edit (with the editor on a RAM-backed scratch file), generate, rekey, verify and list.

pub mod edit;
pub mod editor;
pub mod generate;
pub mod listing;
pub mod rekey;
pub mod scratch;
pub mod verify;
