//! Turning one position's logits into one token id.
//!
//! The pipeline, in the order Hugging Face's `generate` applies its logits processors:
//! 1. NaN logits become -inf, so a NaN can never be chosen.
//! 2. Repetition penalty (CTRL, Keskar et al. 2019), once for every *distinct* token t in the
//!    history: `l_t = l_t > 0 ? l_t / penalty : l_t * penalty`. Dividing a positive logit and
//!    multiplying a negative one both move it down when penalty > 1 (and up when < 1).
//! 3. Temperature 0 is greedy decoding: the argmax, ties to the lowest id, no randomness used.
//! 4. Otherwise `p_i ∝ exp((l_i - max_j l_j) / T)`, in f64. Subtracting the max before dividing
//!    keeps every exponent <= 0 for any T > 0, so tiny temperatures cannot overflow and tend to
//!    greedy. Logits at +inf take all the mass, shared equally (the limit of the softmax).
//! 5. Top-k: keep the k most probable tokens (ties to the lower id).
//! 6. Top-p (nucleus, Holtzman et al. 2019), over what top-k left, renormalised: keep the smallest
//!    set of most probable tokens whose mass is >= top_p; it always holds at least one token.
//! 7. Renormalise and draw with one `u ~ U[0, 1)` from a ChaCha8 stream seeded with `seed`.
//!
//! The same seed and the same sequence of calls give the same tokens on every machine: the draw
//! uses only the portable ChaCha8 stream and f64 arithmetic in a fixed order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

/// How the next token is chosen from the logits. Plain data; check it with
/// [`SamplingConfig::validate`] (or let [`Sampler::new`] do it) before any work.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 means greedy decoding (and then `top_k`/`top_p` do not matter).
    pub temperature: f32,
    /// Keep only the k most probable tokens; `None` keeps every token.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most probable tokens with at least this much probability mass;
    /// `None` (or 1) keeps every token.
    pub top_p: Option<f32>,
    /// CTRL repetition penalty for tokens already in the history; 1 means none.
    pub repetition_penalty: f32,
    /// Seed of the random stream; the same seed reproduces the same tokens.
    pub seed: u64,
}

impl SamplingConfig {
    /// Greedy decoding: always the most probable token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every option on its own; combinations are all meaningful (top-k and top-p compose,
    /// and with temperature 0 they are simply unused), so there is nothing to check across them.
    pub fn validate(&self) -> Result<(), SamplingConfigError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingConfigError::Temperature(self.temperature));
        }
        if self.top_k == Some(0) {
            return Err(SamplingConfigError::TopKZero);
        }
        if let Some(top_p) = self.top_p {
            // Written so that NaN fails too.
            if !(top_p > 0.0 && top_p <= 1.0) {
                return Err(SamplingConfigError::TopP(top_p));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(SamplingConfigError::RepetitionPenalty(
                self.repetition_penalty,
            ));
        }
        Ok(())
    }
}

impl Default for SamplingConfig {
    /// Plain sampling from the model's distribution: temperature 1, no filtering, no penalty.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A sampling option that is out of range; the message says what range is allowed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplingConfigError {
    #[error("temperature must be a finite number >= 0 (0 means greedy decoding), got {0}")]
    Temperature(f32),
    #[error("top_k must be at least 1 (leave it unset to keep every token), got 0")]
    TopKZero,
    #[error("top_p must be in (0, 1] (1 keeps every token; 0.9 is a common choice), got {0}")]
    TopP(f32),
    #[error(
        "repetition_penalty must be a finite number > 0 (1 means no penalty; 1.1 is a common \
         choice), got {0}"
    )]
    RepetitionPenalty(f32),
}

/// Why no token could be drawn from a logits vector. These point at a bug or a broken model,
/// not at user input, so the generator should stop with the message.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SampleError {
    #[error("cannot sample from an empty logits vector (vocabulary size 0)")]
    EmptyLogits,
    #[error("a vocabulary of {vocab} logits has ids that do not fit in u32")]
    VocabTooLarge { vocab: usize },
    #[error(
        "all {vocab} logits are NaN or -inf, so there is no distribution to sample from; the \
         model's activations overflowed or the checkpoint is broken"
    )]
    NoUsableLogits { vocab: usize },
    #[error("history token {token} is outside the vocabulary of {vocab} logits")]
    HistoryTokenOutOfRange { token: u32, vocab: usize },
}

/// Draws tokens from logits under a validated [`SamplingConfig`]. One `Sampler` per sequence:
/// its random stream advances with every non-greedy draw.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
    // Scratch kept between calls so that sampling allocates nothing after the first token.
    /// [vocab] the logits after NaN cleanup and the repetition penalty.
    logits: Vec<f32>,
    /// [vocab] marks the history tokens already penalised in this call (all false between calls).
    penalised: Vec<bool>,
    /// (token, unnormalised probability) of the tokens still in the running, weight > 0.
    candidates: Vec<(u32, f64)>,
}

impl Sampler {
    /// Validates `config` and seeds the random stream with `config.seed`.
    pub fn new(config: SamplingConfig) -> Result<Self, SamplingConfigError> {
        config.validate()?;
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            logits: Vec::new(),
            penalised: Vec::new(),
            candidates: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Picks the next token. `logits` is [vocab] for one position; `history` holds the tokens
    /// the repetition penalty applies to (usually prompt plus generated so far). The history is
    /// read only when `repetition_penalty != 1`, at O(history) per call.
    ///
    /// NaN logits count as -inf. If every logit is NaN or -inf (after the penalty), this returns
    /// [`SampleError::NoUsableLogits`] rather than an arbitrary token.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SampleError> {
        self.prepare_logits(logits, history)?;
        if self.config.temperature == 0.0 {
            return Ok(argmax(&self.logits));
        }
        self.fill_candidates();
        Ok(self.draw())
    }

    /// Steps 1 and 2: copy into `self.logits`, NaN -> -inf, repetition penalty; then checks that
    /// something is left to choose from.
    fn prepare_logits(&mut self, logits: &[f32], history: &[u32]) -> Result<(), SampleError> {
        let vocab = logits.len();
        if vocab == 0 {
            return Err(SampleError::EmptyLogits);
        }
        if u32::try_from(vocab - 1).is_err() {
            return Err(SampleError::VocabTooLarge { vocab });
        }
        self.logits.clear();
        self.logits.extend(
            logits
                .iter()
                .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l }),
        );

        let penalty = self.config.repetition_penalty;
        if penalty != 1.0 {
            if let Some(&token) = history.iter().find(|&&t| t as usize >= vocab) {
                return Err(SampleError::HistoryTokenOutOfRange { token, vocab });
            }
            self.penalised.resize(vocab, false);
            for &t in history {
                let t = t as usize;
                if !self.penalised[t] {
                    self.penalised[t] = true;
                    let l = &mut self.logits[t];
                    *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                }
            }
            for &t in history {
                self.penalised[t as usize] = false;
            }
        }

        if self.logits.iter().all(|&l| l == f32::NEG_INFINITY) {
            return Err(SampleError::NoUsableLogits { vocab });
        }
        Ok(())
    }

    /// Steps 4 to 6: softmax weights at the temperature, then top-k and top-p, leaving the
    /// survivors in `self.candidates` (unnormalised; `draw` normalises).
    fn fill_candidates(&mut self) {
        let temperature = self.config.temperature as f64;
        let max = self.logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
        self.candidates.clear();
        if max == f32::INFINITY {
            // exp((l - max) / T) is undefined here; the limit gives each +inf logit equal mass.
            self.candidates.extend(
                (0u32..)
                    .zip(&self.logits)
                    .filter(|&(_, &l)| l == f32::INFINITY)
                    .map(|(i, _)| (i, 1.0)),
            );
        } else {
            // The argmax has weight exp(0) = 1, so at least one candidate survives.
            self.candidates.extend(
                (0u32..)
                    .zip(&self.logits)
                    .map(|(i, &l)| (i, ((l as f64 - max as f64) / temperature).exp()))
                    .filter(|&(_, w)| w > 0.0),
            );
        }

        // Most probable first, ties to the lower id: a total order, so the result is the same
        // whatever the sort algorithm does.
        let more_probable =
            |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));

        if let Some(k) = self.config.top_k {
            if k < self.candidates.len() {
                self.candidates.select_nth_unstable_by(k - 1, more_probable);
                self.candidates.truncate(k);
            }
        }
        if let Some(top_p) = self.config.top_p {
            if top_p < 1.0 {
                self.candidates.sort_unstable_by(more_probable);
                let total: f64 = self.candidates.iter().map(|&(_, w)| w).sum();
                let threshold = top_p as f64 * total;
                let mut cumulative = 0.0;
                let mut keep = self.candidates.len();
                for (j, &(_, w)) in self.candidates.iter().enumerate() {
                    cumulative += w;
                    if cumulative >= threshold {
                        keep = j + 1;
                        break;
                    }
                }
                self.candidates.truncate(keep);
            }
        }
    }

    /// Step 7: inverse-CDF draw over `self.candidates` (non-empty, weights > 0).
    fn draw(&mut self) -> u32 {
        let total: f64 = self.candidates.iter().map(|&(_, w)| w).sum();
        let u = self.rng.random::<f64>() * total;
        let mut cumulative = 0.0;
        for &(token, w) in &self.candidates {
            cumulative += w;
            if u < cumulative {
                return token;
            }
        }
        // Rounding left u at or past the last partial sum: that is the last candidate's slice.
        self.candidates.last().map_or(0, |&(token, _)| token)
    }

    /// The full distribution `sample` draws from, [vocab], summing to 1 (one-hot when greedy).
    #[cfg(test)]
    fn probabilities(&mut self, logits: &[f32], history: &[u32]) -> Result<Vec<f64>, SampleError> {
        self.prepare_logits(logits, history)?;
        let mut probs = vec![0.0; logits.len()];
        if self.config.temperature == 0.0 {
            probs[argmax(&self.logits) as usize] = 1.0;
            return Ok(probs);
        }
        self.fill_candidates();
        let total: f64 = self.candidates.iter().map(|&(_, w)| w).sum();
        for &(token, w) in &self.candidates {
            probs[token as usize] = w / total;
        }
        Ok(probs)
    }
}

/// Index of the largest value, ties to the lowest index. `values` is non-empty, NaN-free, and
/// its length fits in u32 (checked by `prepare_logits`).
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
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
                    assert!((p - e).abs() < 1e-12, "{config:?}: {probs:?} vs {expected:?}");
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
        assert!(s.probabilities(&logits, &[]).unwrap().iter().all(|&p| p > 0.0));
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
        let logits: Vec<f32> = [0.4f64, 0.3, 0.2, 0.1].iter().map(|p| p.ln() as f32).collect();
        let mut s = sampler(SamplingConfig {
            top_k: Some(2),
            top_p: Some(0.5),
            ..sampling(1.0, 0)
        });
        assert_eq!(s.probabilities(&logits, &[]).unwrap(), vec![1.0, 0.0, 0.0, 0.0]);
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
        let without = sampler(sampling(1.0, 0)).probabilities(&logits, &[]).unwrap();
        assert!(with[0] < without[0], "positive logit: {with:?} vs {without:?}");
        assert!(with[1] < without[1], "negative logit: {with:?} vs {without:?}");
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
        assert_eq!(sampler(SamplingConfig::greedy()).sample(&logits, &[]).unwrap(), 1);
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
        assert_eq!(sampler(SamplingConfig::greedy()).sample(&logits, &[]), expected);
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
        assert_eq!(sampler(SamplingConfig::greedy()).sample(&logits, &[]).unwrap(), 0);
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
            assert!(matches!(config.validate(), Err(SamplingConfigError::TopP(_))));
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
        assert!(message.contains("(0, 1]") && message.contains("1.5"), "{message}");
        let message = SamplingConfigError::Temperature(-1.0).to_string();
        assert!(message.contains(">= 0") && message.contains("greedy"), "{message}");
    }
}
