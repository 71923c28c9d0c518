//! Tests of samba-data: one test binary, one module per concept.

mod common;
mod prepare;
mod reader;
mod sources;
mod tokenizer;
