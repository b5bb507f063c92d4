//! Listeners (placeholder while the decoders land).
