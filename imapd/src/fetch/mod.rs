//! Answering FETCH items: from what was parsed at delivery where possible (ENVELOPE,
//! BODYSTRUCTURE, header fields), from the body only when a section needs it.

pub mod binary;
pub mod mime;
pub mod structure;
