//! Shared model of the invoice functions.
