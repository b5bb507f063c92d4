//! Record types that cross the kernel boundary. `#![no_std]`, `#[repr(C)]`, no pointers.
#![no_std]
