//! Configuration model and its front ends.
