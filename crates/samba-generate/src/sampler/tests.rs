//! Unit tests of the sampler; a child module so they can look at its scratch buffers and the
//! exact distribution it draws from.

use super::*;

fn sampler(config: SamplingConfig) -> Sampler {
    Sampler::new(config).unwrap()
}

fn sampling(temperature: f32, seed: u64) -> SamplingConfig {
    SamplingConfig {
        temperature,
        seed,
        ..SamplingConfig::default()
    }
}

/// Logits with distinct values spaced at least 0.01 apart, in a random order.
fn distinct_logits(rng: &mut ChaCha8Rng, vocab: usize) -> Vec<f32> {
    let mut logits: Vec<f32> = (0..vocab).map(|i| i as f32 * 0.01 - 1.0).collect();
    for i in (1..vocab).rev() {
        logits.swap(i, rng.random_range(0..=i));
    }
    logits
}

fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

/// Pearson's chi-square statistic of `draws` draws from `sampler` against `expected`.
fn chi_square(sampler: &mut Sampler, logits: &[f32], expected: &[f64], draws: usize) -> f64 {
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..draws {
        counts[sampler.sample(logits, &[]).unwrap() as usize] += 1;
    }
    counts
        .iter()
        .zip(expected)
        .map(|(&c, &p)| {
            let e = p * draws as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

// The 0.999 quantile of chi-square with 4 degrees of freedom (5 categories): a correct
// sampler exceeds it with probability 0.001, and the seeds are fixed, so no flakiness.
const CHI_SQUARE_4DOF_999: f64 = 18.47;
const DRAWS: usize = 20_000;

#[test]
fn greedy_picks_argmax() {
    let mut s = sampler(SamplingConfig::greedy());
    assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9], &[]).unwrap(), 1);
    assert_eq!(s.sample(&[-5.0, -4.0, -6.0], &[]).unwrap(), 1);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..50 {
        let logits = distinct_logits(&mut rng, 300);
        let expected = (0..)
            .zip(&logits)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(s.sample(&logits, &[]).unwrap(), expected);
    }
}

#[test]
fn greedy_breaks_ties_to_lowest_id() {
    let mut s = sampler(SamplingConfig::greedy());
    assert_eq!(s.sample(&[1.0, 2.0, 0.0, 2.0, 2.0], &[]).unwrap(), 1);
    assert_eq!(s.sample(&[0.0, 0.0, 0.0], &[]).unwrap(), 0);
}

#[test]
fn near_zero_temperature_behaves_like_greedy() {
    let mut greedy = sampler(SamplingConfig::greedy());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for temperature in [1e-3, 1e-6, 1e-30, f32::MIN_POSITIVE] {
        let mut cold = sampler(sampling(temperature, 42));
        for _ in 0..50 {
            let logits = distinct_logits(&mut rng, 200);
            assert_eq!(
                cold.sample(&logits, &[]).unwrap(),
                greedy.sample(&logits, &[]).unwrap(),
                "temperature {temperature}"
            );
        }
    }
}

#[test]
fn near_zero_temperature_does_not_overflow_on_large_logits() {
    let mut cold = sampler(sampling(1e-30, 3));
    let logits = [1e30, -1e30, 3e38, f32::MAX];
    for _ in 0..100 {
        assert_eq!(cold.sample(&logits, &[]).unwrap(), 3);
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let logits: Vec<f32> = (0..64).map(|i| (i % 7) as f32 * 0.3).collect();
    let config = SamplingConfig {
        temperature: 0.8,
        top_k: Some(40),
        top_p: Some(0.95),
        repetition_penalty: 1.2,
        seed: 1234,
    };
    let run = |config: &SamplingConfig| {
        let mut s = sampler(config.clone());
        let mut history = vec![3u32, 5, 3];
        for _ in 0..200 {
            let t = s.sample(&logits, &history).unwrap();
            history.push(t);
        }
        history
    };
    assert_eq!(run(&config), run(&config));
}

#[test]
fn different_seeds_give_different_sequences() {
    let logits = vec![0.0f32; 50];
    let run = |seed| {
        let mut s = sampler(sampling(1.0, seed));
        (0..100)
            .map(|_| s.sample(&logits, &[]).unwrap())
            .collect::<Vec<_>>()
    };
    let a = run(1);
    assert_ne!(a, run(2));
    assert_ne!(a, run(u64::MAX));
    // And a single sequence is not stuck on one token.
    assert!(a.iter().any(|&t| t != a[0]));
}

#[test]
fn top_k_one_equals_greedy() {
    let mut greedy = sampler(SamplingConfig::greedy());
    let mut top1 = sampler(SamplingConfig {
        top_k: Some(1),
        temperature: 2.0,
        ..sampling(1.0, 9)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..200 {
        let logits = distinct_logits(&mut rng, 100);
        assert_eq!(
            top1.sample(&logits, &[]).unwrap(),
            greedy.sample(&logits, &[]).unwrap()
        );
    }
}

#[test]
fn tiny_top_p_equals_greedy() {
    let mut greedy = sampler(SamplingConfig::greedy());
    let mut nucleus = sampler(SamplingConfig {
        top_p: Some(1e-6),
        ..sampling(1.5, 11)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..200 {
        let logits = distinct_logits(&mut rng, 100);
        assert_eq!(
            nucleus.sample(&logits, &[]).unwrap(),
            greedy.sample(&logits, &[]).unwrap()
        );
    }
}

#[test]
fn unfiltered_sampling_matches_softmax() {
    let logits = [1.0f32, 0.5, 0.0, -0.5, 2.0];
    for (temperature, seed) in [(1.0f32, 5u64), (0.7, 6), (2.5, 7)] {
        let expected = softmax(&logits, temperature as f64);
        for config in [
            sampling(temperature, seed),
            SamplingConfig {
                top_k: None,
                top_p: Some(1.0),
                ..sampling(temperature, seed)
            },
            SamplingConfig {
                top_k: Some(5),
                ..sampling(temperature, seed)
            },
        ] {
            let mut s = sampler(config.clone());
            let probs = s.probabilities(&logits, &[]).unwrap();
            for (p, e) in probs.iter().zip(&expected) {
                assert!(
                    (p - e).abs() < 1e-12,
                    "{config:?}: {probs:?} vs {expected:?}"
                );
            }
            let chi2 = chi_square(&mut s, &logits, &expected, DRAWS);
            assert!(chi2 < CHI_SQUARE_4DOF_999, "{config:?}: chi-square {chi2}");
        }
    }
}

#[test]
fn top_p_one_is_the_same_as_no_top_p() {
    let logits: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin()).collect();
    let run = |top_p| {
        let mut s = sampler(SamplingConfig {
            top_p,
            ..sampling(1.0, 77)
        });
        (0..500)
            .map(|_| s.sample(&logits, &[]).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(None), run(Some(1.0)));
}

#[test]
fn top_k_keeps_the_k_most_probable_renormalised() {
    let logits = [0.0f32, 3.0, 1.0, 2.0, 2.0];
    let mut s = sampler(SamplingConfig {
        top_k: Some(3),
        ..sampling(1.0, 0)
    });
    let probs = s.probabilities(&logits, &[]).unwrap();
    // Kept: 1 (3.0), 3 and 4 (2.0, 2.0); the tie at 2.0 vs 1.0 is not involved.
    let expected = softmax(&[3.0, 2.0, 2.0], 1.0);
    assert_eq!(probs[0], 0.0);
    assert_eq!(probs[2], 0.0);
    for (p, e) in [probs[1], probs[3], probs[4]].iter().zip(&expected) {
        assert!((p - e).abs() < 1e-12);
    }
    // A tie across the cut keeps the lower id.
    let mut s = sampler(SamplingConfig {
        top_k: Some(2),
        ..sampling(1.0, 0)
    });
    let probs = s.probabilities(&logits, &[]).unwrap();
    assert!(probs[1] > 0.0 && probs[3] > 0.0 && probs[4] == 0.0);
    // k larger than the vocabulary keeps everything.
    let mut s = sampler(SamplingConfig {
        top_k: Some(100),
        ..sampling(1.0, 0)
    });
    assert!(s
        .probabilities(&logits, &[])
        .unwrap()
        .iter()
        .all(|&p| p > 0.0));
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    let probs_in = [0.15f64, 0.5, 0.05, 0.3];
    let logits: Vec<f32> = probs_in.iter().map(|p| p.ln() as f32).collect();
    // top_p -> tokens kept (by id), chosen away from the cumulative sums 0.5, 0.8, 0.95.
    for (top_p, kept) in [
        (0.4f32, vec![1]),
        (0.75, vec![1, 3]),
        (0.9, vec![0, 1, 3]),
        (0.99, vec![0, 1, 2, 3]),
    ] {
        let mut s = sampler(SamplingConfig {
            top_p: Some(top_p),
            ..sampling(1.0, 0)
        });
        let probs = s.probabilities(&logits, &[]).unwrap();
        let mass: f64 = kept.iter().map(|&i| probs_in[i]).sum();
        for (i, &p) in probs.iter().enumerate() {
            let expected = if kept.contains(&i) {
                probs_in[i] / mass
            } else {
                0.0
            };
            assert!((p - expected).abs() < 1e-6, "top_p {top_p}: {probs:?}");
        }
    }
}

#[test]
fn top_p_is_taken_of_what_top_k_left() {
    // After top-k=2 the survivors are [0.4, 0.3] -> [4/7, 3/7]; 4/7 >= 0.5 alone, so top-p
    // keeps one token. Against the original distribution (0.4 < 0.5) it would keep two.
    let logits: Vec<f32> = [0.4f64, 0.3, 0.2, 0.1]
        .iter()
        .map(|p| p.ln() as f32)
        .collect();
    let mut s = sampler(SamplingConfig {
        top_k: Some(2),
        top_p: Some(0.5),
        ..sampling(1.0, 0)
    });
    assert_eq!(
        s.probabilities(&logits, &[]).unwrap(),
        vec![1.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn filtered_sampling_matches_filtered_distribution() {
    let logits = [1.0f32, 0.5, 0.0, -0.5, 2.0, -3.0, -4.0];
    let mut s = sampler(SamplingConfig {
        top_k: Some(6),
        top_p: Some(0.97),
        ..sampling(1.0, 21)
    });
    let expected = s.probabilities(&logits, &[]).unwrap();
    // Token 6 falls to top-k and token 5 to top-p, leaving the 5 categories of the bound.
    assert_eq!((expected[5], expected[6]), (0.0, 0.0));
    let kept = [0, 1, 2, 3, 4];
    let mut counts = [0usize; 7];
    for _ in 0..DRAWS {
        counts[s.sample(&logits, &[]).unwrap() as usize] += 1;
    }
    assert_eq!(counts[5] + counts[6], 0);
    let chi2: f64 = kept
        .iter()
        .map(|&i| {
            let e = expected[i] * DRAWS as f64;
            (counts[i] as f64 - e).powi(2) / e
        })
        .sum();
    assert!(chi2 < CHI_SQUARE_4DOF_999, "chi-square {chi2}");
}

#[test]
fn repetition_penalty_lowers_repeated_tokens_for_positive_and_negative_logits() {
    let logits = [2.0f32, -1.0, 0.5, 0.0, 1.0];
    let history = [0u32, 1, 0, 3, 0];
    let config = SamplingConfig {
        repetition_penalty: 2.0,
        ..sampling(1.0, 0)
    };
    let mut penalised = sampler(config.clone());
    penalised.prepare_logits(&logits, &history).unwrap();
    // Token 0 appears three times but is penalised once; 0 stays 0.
    assert_eq!(penalised.logits, vec![1.0, -2.0, 0.5, 0.0, 1.0]);

    let with = penalised.probabilities(&logits, &history).unwrap();
    let without = sampler(sampling(1.0, 0))
        .probabilities(&logits, &[])
        .unwrap();
    assert!(
        with[0] < without[0],
        "positive logit: {with:?} vs {without:?}"
    );
    assert!(
        with[1] < without[1],
        "negative logit: {with:?} vs {without:?}"
    );
    assert!(with[2] > without[2] && with[4] > without[4]);

    // Greedy follows: token 0 wins without the penalty; with it 2.0 / 2.5 = 0.8 < 1.0.
    let mut greedy = sampler(SamplingConfig {
        repetition_penalty: 2.5,
        ..SamplingConfig::greedy()
    });
    assert_eq!(greedy.sample(&logits, &[]).unwrap(), 0);
    assert_eq!(greedy.sample(&logits, &[0]).unwrap(), 4);
}

#[test]
fn repetition_penalty_below_one_favours_repeated_tokens() {
    let logits = [2.0f32, -1.0, 0.5];
    let mut s = sampler(SamplingConfig {
        repetition_penalty: 0.5,
        ..sampling(1.0, 0)
    });
    s.prepare_logits(&logits, &[0, 1]).unwrap();
    assert_eq!(s.logits, vec![4.0, -0.5, 0.5]);
}

#[test]
fn history_is_ignored_without_penalty_and_checked_with_it() {
    let logits = [0.0f32, 1.0];
    let mut plain = sampler(SamplingConfig::greedy());
    assert_eq!(plain.sample(&logits, &[7]).unwrap(), 1);
    let mut penalised = sampler(SamplingConfig {
        repetition_penalty: 1.3,
        ..SamplingConfig::greedy()
    });
    assert_eq!(
        penalised.sample(&logits, &[1, 2]),
        Err(SampleError::HistoryTokenOutOfRange { token: 2, vocab: 2 })
    );
}

#[test]
fn nan_logits_are_never_chosen() {
    let logits = [f32::NAN, -1.0, f32::NAN, -2.0];
    assert_eq!(
        sampler(SamplingConfig::greedy())
            .sample(&logits, &[])
            .unwrap(),
        1
    );
    let mut s = sampler(sampling(1.0, 4));
    for _ in 0..1000 {
        let t = s.sample(&logits, &[]).unwrap();
        assert!(t == 1 || t == 3);
    }
}

#[test]
fn all_nan_or_negative_infinity_logits_are_an_error() {
    let logits = [f32::NAN, f32::NEG_INFINITY, f32::NAN];
    let expected = Err(SampleError::NoUsableLogits { vocab: 3 });
    assert_eq!(
        sampler(SamplingConfig::greedy()).sample(&logits, &[]),
        expected
    );
    assert_eq!(sampler(sampling(1.0, 0)).sample(&logits, &[]), expected);
}

#[test]
fn empty_logits_are_an_error() {
    assert_eq!(
        sampler(sampling(1.0, 0)).sample(&[], &[]),
        Err(SampleError::EmptyLogits)
    );
}

#[test]
fn positive_infinity_logits_share_the_mass() {
    let logits = [f32::INFINITY, 0.0, f32::INFINITY, 5.0];
    assert_eq!(
        sampler(SamplingConfig::greedy())
            .sample(&logits, &[])
            .unwrap(),
        0
    );
    let mut s = sampler(sampling(1.0, 8));
    let probs = s.probabilities(&logits, &[]).unwrap();
    assert_eq!(probs, vec![0.5, 0.0, 0.5, 0.0]);
    let draws: Vec<u32> = (0..200).map(|_| s.sample(&logits, &[]).unwrap()).collect();
    assert!(draws.contains(&0) && draws.contains(&2));
    assert!(draws.iter().all(|&t| t == 0 || t == 2));
}

#[test]
fn validation_rejects_each_bad_option() {
    let base = SamplingConfig::default();
    for temperature in [-1.0, -f32::MIN_POSITIVE, f32::NAN, f32::INFINITY] {
        let config = SamplingConfig {
            temperature,
            ..base.clone()
        };
        assert!(matches!(
            config.validate(),
            Err(SamplingConfigError::Temperature(_))
        ));
    }
    for top_p in [0.0, -0.1, 1.0001, 1.5, f32::NAN, f32::INFINITY] {
        let config = SamplingConfig {
            top_p: Some(top_p),
            ..base.clone()
        };
        assert!(matches!(
            config.validate(),
            Err(SamplingConfigError::TopP(_))
        ));
    }
    let config = SamplingConfig {
        top_k: Some(0),
        ..base.clone()
    };
    assert_eq!(config.validate(), Err(SamplingConfigError::TopKZero));
    for repetition_penalty in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let config = SamplingConfig {
            repetition_penalty,
            ..base.clone()
        };
        assert!(matches!(
            config.validate(),
            Err(SamplingConfigError::RepetitionPenalty(_))
        ));
    }
    // Sampler::new validates too.
    assert_eq!(
        Sampler::new(SamplingConfig {
            temperature: -0.5,
            ..base.clone()
        })
        .unwrap_err(),
        SamplingConfigError::Temperature(-0.5)
    );
}

#[test]
fn validation_accepts_edge_values() {
    for config in [
        SamplingConfig::default(),
        SamplingConfig::greedy(),
        SamplingConfig {
            temperature: 0.0,
            top_k: Some(1),
            top_p: Some(1.0),
            repetition_penalty: 0.01,
            seed: u64::MAX,
        },
        SamplingConfig {
            temperature: 100.0,
            top_p: Some(f32::MIN_POSITIVE),
            ..SamplingConfig::default()
        },
    ] {
        assert_eq!(config.validate(), Ok(()), "{config:?}");
    }
}

#[test]
fn error_messages_say_what_is_allowed() {
    let message = SamplingConfigError::TopP(1.5).to_string();
    assert!(
        message.contains("(0, 1]") && message.contains("1.5"),
        "{message}"
    );
    let message = SamplingConfigError::Temperature(-1.0).to_string();
    assert!(
        message.contains(">= 0") && message.contains("greedy"),
        "{message}"
    );
}
