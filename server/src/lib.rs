//! certkeep server library.
