//! The parts of text generation that do not depend on a backend: choosing the next token from
//! logits ([`Sampler`]), deciding when to stop ([`StopStream`] over the streamed text,
//! [`StopTokens`] over ids), and reporting throughput ([`GenerationStats`]).
//!
//! A backend's decode loop uses them like this, per sequence:
//! 1. validate the user's [`SamplingConfig`] and [`StopStrings`] before any model work;
//! 2. prefill the prompt, then for each step: logits -> [`Sampler::sample`] -> token id; stop if
//!    [`StopTokens::contains`] it; otherwise detokenise, [`StopStream::push`] the text, print
//!    the returned `emit`, and stop once `stopped` is set;
//! 3. at the end, print [`StopStream::finish`] and the [`GenerationStats`] line (to stderr).

pub mod sampler;
pub mod stop;

pub use sampler::{SampleError, Sampler, SamplingConfig, SamplingConfigError};
pub use stop::{StopError, StopMatch, StopStream, StopStrings, StopTokens, StreamStep};

use std::fmt;

/// Token counts and wall-clock times of one generation run (prefill and decoding measured
/// separately, since their throughputs differ by orders of magnitude).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub generated_tokens: usize,
    pub generation_seconds: f64,
}

impl GenerationStats {
    /// Prefill throughput; `None` when no time was measured (`prompt_seconds <= 0`).
    pub fn prompt_tokens_per_second(&self) -> Option<f64> {
        tokens_per_second(self.prompt_tokens, self.prompt_seconds)
    }

    /// Decoding throughput; `None` when no time was measured (`generation_seconds <= 0`).
    pub fn generation_tokens_per_second(&self) -> Option<f64> {
        tokens_per_second(self.generated_tokens, self.generation_seconds)
    }
}

fn tokens_per_second(tokens: usize, seconds: f64) -> Option<f64> {
    (seconds > 0.0).then(|| tokens as f64 / seconds)
}

/// One line: `prompt: 512 tokens in 0.81 s (632.1 tokens/s); generation: 128 tokens in 1.20 s
/// (106.7 tokens/s)`, with `n/a` for a rate whose time is zero.
impl fmt::Display for GenerationStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.1}"));
        write!(
            f,
            "prompt: {} tokens in {:.2} s ({} tokens/s); generation: {} tokens in {:.2} s ({} \
             tokens/s)",
            self.prompt_tokens,
            self.prompt_seconds,
            rate(self.prompt_tokens_per_second()),
            self.generated_tokens,
            self.generation_seconds,
            rate(self.generation_tokens_per_second()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_rates_and_display() {
        let stats = GenerationStats {
            prompt_tokens: 512,
            prompt_seconds: 0.81,
            generated_tokens: 128,
            generation_seconds: 1.2,
        };
        assert!((stats.prompt_tokens_per_second().unwrap() - 512.0 / 0.81).abs() < 1e-9);
        assert!((stats.generation_tokens_per_second().unwrap() - 128.0 / 1.2).abs() < 1e-9);
        assert_eq!(
            stats.to_string(),
            "prompt: 512 tokens in 0.81 s (632.1 tokens/s); generation: 128 tokens in 1.20 s \
             (106.7 tokens/s)"
        );
    }

    #[test]
    fn stats_without_time_have_no_rate() {
        let stats = GenerationStats {
            prompt_tokens: 3,
            ..GenerationStats::default()
        };
        assert_eq!(stats.prompt_tokens_per_second(), None);
        assert_eq!(stats.generation_tokens_per_second(), None);
        assert_eq!(
            stats.to_string(),
            "prompt: 3 tokens in 0.00 s (n/a tokens/s); generation: 0 tokens in 0.00 s (n/a \
             tokens/s)"
        );
    }
}
