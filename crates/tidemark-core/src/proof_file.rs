//! C2SP `tlog-proof` files: an offline-verifiable inclusion proof.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! index <decimal>
//! <base64 hash>            (one line per proof hash, leaf to root)
//! <empty line>
//! <signed checkpoint note>
//! ```
//!
//! tidemark writes no `extra` line; a reader accepts one (as opaque bytes).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::merkle::Hash;

pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    pub fn to_text(&self) -> String {
        let mut out = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<TlogProof, String> {
        let (head, checkpoint) = text.split_once("\n\n").ok_or("no blank line before the checkpoint")?;
        let mut lines = head.split('\n');
        if lines.next() != Some(TLOG_PROOF_HEADER) {
            return Err(format!("first line is not {TLOG_PROOF_HEADER}"));
        }
        let mut line = lines.next().ok_or("no index line")?;
        let mut extra = None;
        if let Some(e) = line.strip_prefix("extra ") {
            extra = Some(B64.decode(e).map_err(|_| "extra is not base64")?);
            line = lines.next().ok_or("no index line")?;
        }
        let index_text = line.strip_prefix("index ").ok_or("no index line")?;
        let index: u64 = index_text.parse().map_err(|_| "index is not a decimal number")?;
        if index.to_string() != index_text {
            return Err("index has leading zeros or a sign".into());
        }
        let hashes = lines
            .map(|l| {
                B64.decode(l)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
                    .ok_or(format!("proof line {l:?} is not a base64 SHA-256 hash"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TlogProof { extra, index, hashes, checkpoint: checkpoint.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let p = TlogProof {
            extra: None,
            index: 42,
            hashes: vec![[1; 32], [2; 32]],
            checkpoint: "o\n1\nAAAA\n\n— o sig\n".into(),
        };
        let text = p.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 42\n"));
        assert_eq!(TlogProof::parse(&text).unwrap(), p);
        assert!(TlogProof::parse(&text.replace("index 42", "index 042")).is_err());
        assert!(TlogProof::parse(&text.replacen("c2sp", "x", 1)).is_err());
        let with_extra = TlogProof { extra: Some(b"hi".to_vec()), ..p };
        assert_eq!(TlogProof::parse(&with_extra.to_text()).unwrap(), with_extra);
    }
}
