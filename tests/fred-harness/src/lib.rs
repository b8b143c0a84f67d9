//! fred-harness: runs the nucleus' real FRED entry stubs and enable sequence in a host
//! process, with privileged instructions trapped and emulated (being written).
