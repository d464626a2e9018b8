//! Agent protocol types (mTLS listener, `/agent/v1/...`).
