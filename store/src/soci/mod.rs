//! SOCI (seekable OCI) for unmodified gzip layers: the pieces built so far. See the design
//! in docs/formats.md; only the zran span index exists, nothing reads SOCI indexes yet.

pub mod zran;
