//! The one source of randomness: the OS CSPRNG.

/// Fills `buf` from the OS CSPRNG.
///
/// # Panics
/// If the OS random source fails: there is no safe fallback for key or salt generation.
pub fn fill(buf: &mut [u8]) {
    // Invariant: getrandom only fails when the OS has no usable entropy source, which we
    // cannot recover from without risking repeated keys or salts.
    getrandom::fill(buf).expect("OS random number generator failed");
}

/// `N` random bytes from the OS CSPRNG.
pub fn array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    fill(&mut a);
    a
}
