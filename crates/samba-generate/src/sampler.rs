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
    /// `[vocab]` the logits after NaN cleanup and the repetition penalty.
    logits: Vec<f32>,
    /// `[vocab]` marks history tokens already penalised in this call (all false between calls).
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

    /// Picks the next token. `logits` is `[vocab]` for one position; `history` holds the tokens
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

    /// The full distribution `sample` draws from, `[vocab]`, summing to 1 (one-hot when greedy).
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
mod tests;
