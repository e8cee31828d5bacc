//! Intel TDX evidence.
