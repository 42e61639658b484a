//! Empty library target: lets `sipguard` declare a build-dependency on this
//! crate so cargo rebuilds the embedded object when the program changes.
#![no_std]
