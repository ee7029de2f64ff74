//! Random bytes and passwords (AWS `GenerateRandom`, Alibaba `GetRandomPassword`), from the
//! OS CSPRNG.

use zeroize::Zeroizing;

use crate::error::Fault;

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// Alibaba's punctuation set.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// What a password may hold.
pub(crate) struct PasswordOptions {
    pub length: usize,
    /// Characters never used.
    pub exclude: String,
    pub lowercase: bool,
    pub uppercase: bool,
    pub numbers: bool,
    pub punctuation: bool,
    /// At least one character of each included class.
    pub each: bool,
}

/// A uniformly random index below `n` (rejection sampling: no modulo bias).
fn below(n: usize) -> usize {
    // Invariant: 0 < n <= 256 (character classes).
    let limit = 256 - 256 % n;
    loop {
        let [b] = envseal_core::random::array::<1>();
        if usize::from(b) < limit {
            return usize::from(b) % n;
        }
    }
}

/// A random password.
///
/// # Errors
/// `InvalidParameter` when the options leave no character, or fewer positions than classes.
pub(crate) fn password(o: &PasswordOptions) -> Result<Zeroizing<String>, Fault> {
    let classes: Vec<Vec<char>> =
        [(o.lowercase, LOWER), (o.uppercase, UPPER), (o.numbers, DIGITS), (o.punctuation, PUNCTUATION)]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, set)| set.chars().filter(|c| !o.exclude.contains(*c)).collect::<Vec<char>>())
            .filter(|set| !set.is_empty())
            .collect();
    let all: Vec<char> = classes.iter().flatten().copied().collect();
    if all.is_empty() {
        return Err(Fault::invalid("the options leave no character to build a password from"));
    }
    if o.each && classes.len() > o.length {
        return Err(Fault::invalid("PasswordLength is shorter than the number of character types required"));
    }
    loop {
        let mut out = Zeroizing::new(String::with_capacity(o.length * 4));
        for _ in 0..o.length {
            out.push(all[below(all.len())]);
        }
        if !o.each || classes.iter().all(|set| out.chars().any(|c| set.contains(&c))) {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(length: usize) -> PasswordOptions {
        PasswordOptions {
            length,
            exclude: String::new(),
            lowercase: true,
            uppercase: true,
            numbers: true,
            punctuation: true,
            each: true,
        }
    }

    #[test]
    fn passwords_follow_their_options() {
        for _ in 0..50 {
            let p = password(&opts(8)).unwrap();
            assert_eq!(p.chars().count(), 8);
            assert!(p.chars().any(|c| c.is_ascii_lowercase()) && p.chars().any(|c| c.is_ascii_digit()));
            assert!(p.chars().any(|c| PUNCTUATION.contains(c)) && p.chars().any(|c| c.is_ascii_uppercase()));
        }
        let o = PasswordOptions { punctuation: false, exclude: "abc0".into(), ..opts(64) };
        let p = password(&o).unwrap();
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric() && !"abc0".contains(c)), "{}", *p);
        let none =
            PasswordOptions { lowercase: false, uppercase: false, numbers: false, punctuation: false, ..opts(8) };
        assert!(password(&none).is_err());
        assert_ne!(*password(&opts(32)).unwrap(), *password(&opts(32)).unwrap());
    }
}
