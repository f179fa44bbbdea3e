//! utp-interop: tests of this project against uTP peers nobody here wrote
//! (libutp, libtorrent-rasterbar) and Wireshark's dissector.
//!
//! Not yet implemented: filled by the interop issue.
