//! AMD SEV-SNP evidence.
