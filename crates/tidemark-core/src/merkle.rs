//! The RFC 6962 / RFC 9162 Merkle tree over SHA-256: hashing, proofs and
//! their verification, and the compact frontier the store grows as it appends.
//!
//! Leaf hash = SHA-256(0x00 ‖ leaf), node hash = SHA-256(0x01 ‖ left ‖ right),
//! the empty tree's root = SHA-256(""). The split point of `n` leaves is the
//! largest power of two below `n`. Verification follows the decomposition used
//! by transparency-dev/merkle, so the public vectors apply unchanged.

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// Why a proof was refused, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("index {index} is beyond tree size {size}")]
    IndexBeyondSize { index: u64, size: u64 },
    #[error("proof has {got} hashes, expected {want} for this index and size")]
    WrongLength { got: usize, want: usize },
    #[error("sizes out of order: size1 {size1} > size2 {size2}")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("a consistency proof between equal sizes must be empty")]
    NonEmptyProofForEqualSizes,
    #[error("a consistency proof from the empty tree is meaningless: every tree extends it")]
    FromEmptyTree,
    #[error("empty consistency proof")]
    EmptyProof,
    #[error("calculated root {calculated} does not match expected root {expected}")]
    RootMismatch { calculated: String, expected: String },
    #[error("proof hash {index} is not 32 bytes")]
    BadHashLength { index: usize },
}

pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Root of a list of leaf hashes, by the RFC's recursive definition.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&root_from_leaf_hashes(&leaves[..k]), &root_from_leaf_hashes(&leaves[k..]))
        }
    }
}

/// Read access to the hashes of *complete* subtrees: level `l`, index `i`
/// covers leaves `[i·2^l, (i+1)·2^l)`. The store implements this from its
/// persisted nodes; tests implement it over a vector of leaf hashes.
pub trait SubtreeHashes {
    type Error;
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// A `SubtreeHashes` over leaf hashes held in memory (tests and small trees).
pub struct InMemoryLeaves<'a>(pub &'a [Hash]);

impl SubtreeHashes for InMemoryLeaves<'_> {
    type Error = std::convert::Infallible;
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        let start = (index << level) as usize;
        Ok(root_from_leaf_hashes(&self.0[start..start + (1usize << level)]))
    }
}

/// Hash of leaves `[start, end)`, where `start` is a multiple of the largest
/// power of two ≤ `end - start` (true of every range the proofs ask for).
pub fn range_hash<S: SubtreeHashes>(source: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return source.subtree_hash(n.trailing_zeros(), start / n);
    }
    let k = split_point(n);
    let left = range_hash(source, start, start + k)?;
    let right = range_hash(source, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// Root of the first `size` leaves.
pub fn root_at<S: SubtreeHashes>(source: &S, size: u64) -> Result<Hash, S::Error> {
    range_hash(source, 0, size)
}

/// RFC 6962 PATH(index, D[0:size]), ordered leaf-to-root.
pub fn inclusion_proof<S: SubtreeHashes>(source: &S, index: u64, size: u64) -> Result<Vec<Hash>, S::Error> {
    assert!(index < size, "callers check index < size");
    let mut proof = Vec::new();
    fn path<S: SubtreeHashes>(s: &S, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), S::Error> {
        let n = end - start;
        if n == 1 {
            return Ok(());
        }
        let k = split_point(n);
        if m < k {
            path(s, m, start, start + k, out)?;
            out.push(range_hash(s, start + k, end)?);
        } else {
            path(s, m - k, start + k, end, out)?;
            out.push(range_hash(s, start, start + k)?);
        }
        Ok(())
    }
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// RFC 6962 PROOF(size1, D[0:size2]).
pub fn consistency_proof<S: SubtreeHashes>(source: &S, size1: u64, size2: u64) -> Result<Vec<Hash>, S::Error> {
    assert!(size1 <= size2, "callers check size1 <= size2");
    let mut proof = Vec::new();
    if size1 == 0 || size1 == size2 {
        return Ok(proof);
    }
    fn subproof<S: SubtreeHashes>(
        s: &S,
        m: u64,
        start: u64,
        end: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), S::Error> {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(range_hash(s, start, end)?);
            }
            return Ok(());
        }
        let k = split_point(n);
        if m <= k {
            subproof(s, m, start, start + k, complete, out)?;
            out.push(range_hash(s, start + k, end)?);
        } else {
            subproof(s, m - k, start + k, end, false, out)?;
            out.push(range_hash(s, start, start + k)?);
        }
        Ok(())
    }
    subproof(source, size1, 0, size2, true, &mut proof)?;
    Ok(proof)
}

fn inner_proof_size(index: u64, size: u64) -> usize {
    (64 - (index ^ (size - 1)).leading_zeros()) as usize
}

fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = inner_proof_size(index, size);
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 { node_hash(&seed, h) } else { node_hash(h, &seed) };
    }
    seed
}

fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

fn check_match(calculated: &[u8], expected: &[u8]) -> Result<(), ProofError> {
    if calculated == expected {
        Ok(())
    } else {
        Err(ProofError::RootMismatch { calculated: hex::encode(calculated), expected: hex::encode(expected) })
    }
}

/// Root implied by an inclusion proof for `leaf_hash` at `index` in a tree of `size`.
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf_hash: &Hash, proof: &[Hash]) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let (inner, border) = decompose_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength { got: proof.len(), want: inner + border });
    }
    let res = chain_inner(*leaf_hash, &proof[..inner], index);
    Ok(chain_border_right(res, &proof[inner..]))
}

/// Roots are byte strings, as in the reference verifier: a root of the
/// wrong length simply does not match.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &[u8],
) -> Result<(), ProofError> {
    check_match(&root_from_inclusion_proof(index, size, leaf_hash, proof)?, root)
}

pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::NonEmptyProofForEqualSizes);
        }
        return check_match(root1, root2);
    }
    if proof.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    let (inner, border) = decompose_inclusion(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift;
    let (seed, start) = if size1 == 1 << shift {
        let seed: Hash = root1.try_into().map_err(|_| ProofError::RootMismatch {
            calculated: "(a 32-byte hash)".into(),
            expected: hex::encode(root1),
        })?;
        (seed, 0)
    } else {
        (proof[0], 1)
    };
    if proof.len() != start + inner + border {
        return Err(ProofError::WrongLength { got: proof.len(), want: start + inner + border });
    }
    let proof = &proof[start..];
    let mask = (size1 - 1) >> shift;
    let hash1 = chain_border_right(chain_inner_right(seed, &proof[..inner], mask), &proof[inner..]);
    check_match(&hash1, root1)?;
    let hash2 = chain_border_right(chain_inner(seed, &proof[..inner], mask), &proof[inner..]);
    check_match(&hash2, root2)
}

/// The right frontier of a growing tree: one complete-subtree hash per set bit
/// of `size`, largest first. Appending a leaf reports every subtree it completes
/// so the store can persist them; the root is derived from the frontier alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

/// A complete subtree that an append finished: level, index, hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedNode {
    pub level: u32,
    pub index: u64,
    pub hash: Hash,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; `completed` receives the leaf itself (level 0)
    /// and every larger subtree it completes.
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<CompletedNode>) {
        let index = self.size;
        completed.push(CompletedNode { level: 0, index, hash: leaf });
        let mut level = 0u32;
        let mut hash = leaf;
        while let Some(&(top_level, top_hash)) = self.nodes.last() {
            if top_level != level {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&top_hash, &hash);
            level += 1;
            completed.push(CompletedNode { level, index: index >> level, hash });
        }
        self.nodes.push((level, hash));
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, h) in iter {
            acc = node_hash(h, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    #[test]
    fn known_answers() {
        assert_eq!(hex::encode(empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    }

    #[test]
    fn frontier_matches_recursive_root_and_reports_every_complete_subtree() {
        let l = leaves(70);
        let mut f = Frontier::default();
        let mut done = Vec::new();
        for (i, h) in l.iter().enumerate() {
            f.push(*h, &mut done);
            assert_eq!(f.root(), root_from_leaf_hashes(&l[..=i]));
        }
        let source = InMemoryLeaves(&l);
        for node in &done {
            assert_eq!(node.hash, source.subtree_hash(node.level, node.index).unwrap());
        }
        // 70 leaves complete 70 + 35 + 17 + 8 + 4 + 2 + 1 subtrees.
        assert_eq!(done.len(), 70 + 35 + 17 + 8 + 4 + 2 + 1);
    }

    proptest! {
        #[test]
        fn every_inclusion_and_consistency_proof_verifies(size in 1u64..200, a in 0u64..200, b in 0u64..200) {
            let l = leaves(size as usize);
            let s = InMemoryLeaves(&l);
            let index = a % size;
            let root = root_at(&s, size).unwrap();
            let proof = inclusion_proof(&s, index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &l[index as usize], &proof, &root).is_ok());
            let other = leaf_hash(b"other");
            prop_assert!(verify_inclusion(index, size, &other, &proof, &root).is_err());
            let size1 = 1 + b % size;
            let root1 = root_at(&s, size1).unwrap();
            let cproof = consistency_proof(&s, size1, size).unwrap();
            prop_assert!(verify_consistency(size1, size, &cproof, &root1, &root).is_ok());
            if size1 > 0 && size1 < size {
                let mut bad = cproof.clone();
                bad[0][0] ^= 1;
                prop_assert!(verify_consistency(size1, size, &bad, &root1, &root).is_err());
            }
        }
    }
}
