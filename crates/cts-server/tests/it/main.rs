//! Integration tests of `ctsd` (being written).
