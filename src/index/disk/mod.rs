//! The bytes on disk: headers and checks of every binary file kind ([`format`]), the
//! memory-mapped data files and their writers ([`store`]), and the commit point
//! ([`manifest`]). Nothing here knows about graphs' search or writers' protocol.

pub mod format;
pub mod manifest;
pub mod store;
