//! The kernel programs, one module per family (as aya's and Kunai's probes are): a new hook goes
//! beside its siblings.

mod fifo;
mod io_uring;
mod process;
mod socket;
mod tcp;
