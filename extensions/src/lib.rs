//! utp-ext: user-facing API for the two uTP extensions of this project,
//! data carried on the SYN and metadata-framed messages (extension 2).
//!
//! Not yet implemented: the wire format is specified in the workspace's
//! design notes and will be supported once the engine and runtime land.
#![warn(missing_docs)]
