//! Where records come from and where they go.

pub mod dead_letter;
pub mod feed;
pub mod kafka;
pub mod line;
pub mod replay;
pub mod sink;
pub mod source;
