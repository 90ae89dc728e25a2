//! The local AWS emulator (moto server) lifecycle (filled in by the emulator work).
