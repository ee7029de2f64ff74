//! sops files and dotenvx values (docs/MIGRATING.md): the first byte picks the format, the rest
//! is parsed as a sops file and, if it parses, decrypted with a fixed data key (the MAC and every
//! value's tag must fail cleanly); it is also read as a dotenvx `encrypted:` value. No panics.
#![no_main]

use envseal_core::DataKey;
use envseal_migrate::dotenvx::{PrivateKeys, decrypt_value};
use envseal_migrate::sops::{SopsFile, SopsFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let format = match sel % 4 {
        0 => SopsFormat::Dotenv,
        1 => SopsFormat::Json,
        2 => SopsFormat::Yaml,
        _ => SopsFormat::Ini,
    };
    if let Ok(file) = SopsFile::parse(format, rest) {
        let _ = file.master_keys();
        if let Ok(d) = file.decrypt(&DataKey::from_bytes([0x11; 32])) {
            let _ = d.to_document(envseal_stores::Format::Json);
        }
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let keys = PrivateKeys::parse(&"22".repeat(32)).unwrap();
        let _ = decrypt_value(&keys, text, "FUZZ");
        let _ = envseal_migrate::sops::config::translate(rest);
    }
});
