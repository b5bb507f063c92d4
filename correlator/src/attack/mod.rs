//! ATT&CK
