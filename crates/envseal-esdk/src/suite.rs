//! Algorithm suites (ESDK specification, framework/algorithm-suites.md): the two committing
//! suites of message format version 2, and the ids of the others, so that a message using one
//! of them is refused with the reason.

use std::fmt;

/// An algorithm suite envseal reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// `0x0478` AES_256_GCM_HKDF_SHA512_COMMIT_KEY: key commitment, no signature.
    CommitKey,
    /// `0x0578` AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384: key commitment and an ECDSA
    /// P-384 signature over the whole message (the ESDK's default).
    CommitKeyEcdsaP384,
}

impl Suite {
    /// The suite id as stored in the header.
    pub fn id(self) -> u16 {
        match self {
            Suite::CommitKey => 0x0478,
            Suite::CommitKeyEcdsaP384 => 0x0578,
        }
    }

    /// The suite with this id, if envseal implements it.
    pub fn from_id(id: u16) -> Option<Suite> {
        match id {
            0x0478 => Some(Suite::CommitKey),
            0x0578 => Some(Suite::CommitKeyEcdsaP384),
            _ => None,
        }
    }

    /// Whether messages of this suite end with an ECDSA P-384 signature.
    pub fn is_signed(self) -> bool {
        matches!(self, Suite::CommitKeyEcdsaP384)
    }

    /// The ESDK's name of the suite.
    pub fn name(self) -> &'static str {
        match self {
            Suite::CommitKey => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            Suite::CommitKeyEcdsaP384 => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:04X})", self.name(), self.id())
    }
}

/// The ESDK's name of a suite id that has no key commitment (message format version 1), if it
/// is one: such messages are refused under the commitment policy envseal enforces.
pub fn non_committing_name(id: u16) -> Option<&'static str> {
    Some(match id {
        0x0014 => "AES_128_GCM_IV12_TAG16_NO_KDF",
        0x0046 => "AES_192_GCM_IV12_TAG16_NO_KDF",
        0x0078 => "AES_256_GCM_IV12_TAG16_NO_KDF",
        0x0114 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256",
        0x0146 => "AES_192_GCM_IV12_TAG16_HKDF_SHA256",
        0x0178 => "AES_256_GCM_IV12_TAG16_HKDF_SHA256",
        0x0214 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256",
        0x0346 => "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
        0x0378 => "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
        _ => return None,
    })
}

/// The commitment policy envseal enforces, in the ESDK's words: encrypt only with committing
/// suites, and decrypt only messages that use one.
pub const COMMITMENT_POLICY: &str = "REQUIRE_ENCRYPT_REQUIRE_DECRYPT";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for s in [Suite::CommitKey, Suite::CommitKeyEcdsaP384] {
            assert_eq!(Suite::from_id(s.id()), Some(s));
            assert_eq!(non_committing_name(s.id()), None);
        }
        assert!(Suite::CommitKeyEcdsaP384.is_signed() && !Suite::CommitKey.is_signed());
        assert_eq!(Suite::from_id(0x0378), None);
        assert_eq!(non_committing_name(0x0378), Some("AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384"));
        assert_eq!(Suite::CommitKeyEcdsaP384.to_string(), "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384 (0x0578)");
    }
}
