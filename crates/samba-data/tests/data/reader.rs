use std::collections::HashSet;
use std::path::{Path, PathBuf};

use samba_data::reader::permute;
use samba_data::{
    prepare, DataError, PrepareConfig, SamplerConfig, SamplerPosition, Split, TokenShards,
    WindowOrder, WindowSampler,
};

use crate::common::*;

/// A prepared folder with several train shards (small shards so windows cross none).
fn prepared(dir: &Path, docs: usize) -> PathBuf {
    let corpus = corpus(dir, docs);
    let tok_path = tokenizer_file(dir);
    let out = dir.join("data");
    let cfg = PrepareConfig {
        val_fraction: 0.1,
        shard_tokens: 500,
        ..PrepareConfig::default()
    };
    prepare(&[corpus], tokenizer(), &tok_path, &out, &cfg).unwrap();
    out
}

fn sampler(dir: &Path, seq_len: usize, seed: u64, rank: usize, world: usize) -> WindowSampler {
    let shards = TokenShards::open(dir, Split::Train).unwrap();
    let config = SamplerConfig {
        seq_len,
        seed,
        rank,
        world,
        order: WindowOrder::Shuffled,
    };
    WindowSampler::new(shards, config).unwrap()
}

fn take(s: &mut WindowSampler, n: usize) -> Vec<Vec<u32>> {
    let mut buf = vec![0u32; s.config().seq_len + 1];
    (0..n)
        .map(|_| {
            s.next_window(&mut buf).unwrap();
            buf.clone()
        })
        .collect()
}

#[test]
fn sampling_is_deterministic_for_a_seed_and_differs_across_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 120);
    let a = take(&mut sampler(&data, 16, 1, 0, 1), 50);
    let b = take(&mut sampler(&data, 16, 1, 0, 1), 50);
    let c = take(&mut sampler(&data, 16, 2, 0, 1), 50);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn each_window_is_a_slice_of_one_shard_and_an_epoch_visits_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 120);
    let shards = TokenShards::open(&data, Split::Train).unwrap();
    assert!(shards.shard_lens().len() > 3);
    let all: Vec<Vec<u32>> = (0..shards.shard_lens().len())
        .map(|s| shards.shard_tokens(s).unwrap())
        .collect();
    let seq = 16;
    let mut s = sampler(&data, seq, 9, 0, 1);
    let per_epoch = s.windows_per_rank() as usize;
    let mut starts = HashSet::new();
    let mut buf = vec![0u32; seq + 1];
    for _ in 0..per_epoch {
        let at = s.next_window(&mut buf).unwrap();
        let st = at.start as usize;
        assert_eq!(
            buf[..],
            all[at.shard][st..st + seq + 1],
            "window is that slice of its shard"
        );
        assert!(
            starts.insert((at.shard, st)),
            "window visited twice in one epoch"
        );
    }
    let offsets: HashSet<usize> = starts.iter().map(|&(_, st)| st % seq).collect();
    assert_eq!(offsets.len(), 1, "one grid per epoch");
    // The grid is complete: every window that fits at that offset was visited.
    let o = *offsets.iter().next().unwrap();
    let expected: usize = all
        .iter()
        .map(|t| {
            if t.len() > o + seq {
                (t.len() - 1 - o) / seq
            } else {
                0
            }
        })
        .sum();
    assert_eq!(starts.len(), expected);
    assert_eq!(s.position().epoch, 0);
    take(&mut s, 1);
    assert_eq!(s.position().epoch, 1);
    assert_eq!(s.position().step, 1);
}

#[test]
fn a_saved_position_resumes_with_exactly_the_next_windows() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60);
    let mut s = sampler(&data, 8, 42, 1, 2);
    let per_epoch = s.windows_per_rank() as usize;
    // Stop mid-way through the second epoch.
    take(&mut s, per_epoch + per_epoch / 2);
    let saved = serde_json::to_string(&s.position()).unwrap();
    let expected = take(&mut s, per_epoch + 3);

    let position: SamplerPosition = serde_json::from_str(&saved).unwrap();
    assert_eq!(position.epoch, 1);
    let shards = TokenShards::open(&data, Split::Train).unwrap();
    let mut resumed = WindowSampler::resume(shards, &position).unwrap();
    assert_eq!(take(&mut resumed, per_epoch + 3), expected);
    assert_eq!(resumed.position(), s.position());
}

#[test]
fn a_position_from_other_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60);
    let s = sampler(&data, 8, 42, 0, 1);
    let mut position = s.position();
    position.tokens += 1;
    let shards = TokenShards::open(&data, Split::Train).unwrap();
    assert!(matches!(
        WindowSampler::resume(shards, &position),
        Err(DataError::Resume(_))
    ));
    let val = TokenShards::open(&data, Split::Val).unwrap();
    assert!(matches!(
        WindowSampler::resume(val, &s.position()),
        Err(DataError::Resume(_))
    ));
}

#[test]
fn ranks_take_disjoint_windows_in_lockstep() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 120);
    let world = 3;
    let mut single = sampler(&data, 16, 5, 0, 1);
    let n = single.windows_per_rank() as usize;
    let all = take(&mut single, n);
    let mut seen = HashSet::new();
    let mut per_rank = None;
    for rank in 0..world {
        let mut s = sampler(&data, 16, 5, rank, world);
        let n = s.windows_per_rank() as usize;
        assert_eq!(*per_rank.get_or_insert(n), n);
        // With world workers the permuted slots are dealt round-robin.
        let mine = take(&mut s, n);
        for (i, w) in mine.iter().enumerate() {
            assert_eq!(w, &all[i * world + rank]);
            assert!(seen.insert((i * world + rank, w.clone())));
        }
    }
}

#[test]
fn sequential_order_reads_the_stream_in_order_for_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60);
    let shards = TokenShards::open(&data, Split::Train).unwrap();
    let first = shards.shard_tokens(0).unwrap();
    let config = SamplerConfig {
        seq_len: 10,
        seed: 0,
        rank: 0,
        world: 1,
        order: WindowOrder::Sequential,
    };
    let mut s = WindowSampler::new(shards, config).unwrap();
    let batch = s.next_batch(3).unwrap();
    assert_eq!(batch.len(), 3 * 11);
    assert_eq!(&batch[..11], &first[..11]);
    assert_eq!(&batch[11..22], &first[10..21]);
}

#[test]
fn bad_sampler_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 20);
    let open = || TokenShards::open(&data, Split::Train).unwrap();
    let cfg = |seq_len, rank, world| SamplerConfig {
        seq_len,
        seed: 0,
        rank,
        world,
        order: WindowOrder::Shuffled,
    };
    assert!(matches!(
        WindowSampler::new(open(), cfg(0, 0, 1)),
        Err(DataError::Config(_))
    ));
    assert!(matches!(
        WindowSampler::new(open(), cfg(8, 2, 2)),
        Err(DataError::Config(_))
    ));
    assert!(matches!(
        WindowSampler::new(open(), cfg(100_000, 0, 1)),
        Err(DataError::TooFewTokens { .. })
    ));
    let mut s = WindowSampler::new(open(), cfg(8, 0, 1)).unwrap();
    assert!(s.next_window(&mut [0u32; 8]).is_err());
}

#[test]
fn the_window_permutation_is_a_bijection() {
    for n in [1u64, 2, 3, 7, 64, 65, 1000, 4097] {
        for key in [0u64, 1, 0xdead_beef] {
            let mut seen: Vec<u64> = (0..n).map(|x| permute(x, n, key)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}, key = {key}");
        }
    }
    let a: Vec<u64> = (0..10).map(|x| permute(x, 1000, 1)).collect();
    assert_ne!(a, (0..10).collect::<Vec<_>>(), "it shuffles");
}
