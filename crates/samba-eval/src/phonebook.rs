//! Phonebook lookup (the paper's Section 4.2, after Jelassi et al., "Repeat After Me"): a list
//! of `size` "First Last: 555-123-4567" lines, then a question about one name in it; the model
//! must continue with that name's number. Accuracy against the list's size shows how well a
//! model recalls exact strings from its context.
//!
//! ```text
//! Here is a phone book:
//! Ada Moreno: 415-203-9981
//! ...
//! What is the phone number of Ada Moreno? The phone number of Ada Moreno is     answer: " 415-203-9981"
//! ```

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samba_data::TextTokenizer;
use samba_runtime::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::scoring::greedy_decode;

const FIRST: [&str; 40] = [
    "Ada", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Hugo", "Irene", "Jack", "Karen",
    "Leo", "Maria", "Nathan", "Olivia", "Paul", "Quinn", "Rosa", "Samuel", "Tara", "Uma", "Victor",
    "Wendy", "Xavier", "Yara", "Zach", "Alice", "Bruno", "Chloe", "Dennis", "Emma", "Felix",
    "Gina", "Henry", "Isla", "James", "Kate", "Louis", "Mona", "Noah",
];
const LAST: [&str; 40] = [
    "Adams",
    "Baker",
    "Carter",
    "Dixon",
    "Evans",
    "Fisher",
    "Garcia",
    "Hughes",
    "Ingram",
    "Jensen",
    "Keller",
    "Lopez",
    "Moreno",
    "Nolan",
    "Owens",
    "Parker",
    "Quincy",
    "Reed",
    "Santos",
    "Turner",
    "Underwood",
    "Vargas",
    "Walker",
    "Young",
    "Zimmer",
    "Allen",
    "Brooks",
    "Collins",
    "Duncan",
    "Ellis",
    "Ford",
    "Grant",
    "Harper",
    "Irwin",
    "Jordan",
    "Knight",
    "Lambert",
    "Mason",
    "Nash",
    "Ortiz",
];

/// The most entries a phone book can have (every first name with every last name).
pub const MAX_SIZE: usize = FIRST.len() * LAST.len();

/// One phone book and its question.
#[derive(Debug, Clone, PartialEq)]
pub struct Phonebook {
    /// (name, number), in the order written.
    pub entries: Vec<(String, String)>,
    /// Index in `entries` of the name asked about.
    pub query: usize,
}

impl Phonebook {
    /// A book of `size` distinct names with distinct numbers, asking about a random one.
    pub fn generate(size: usize, rng: &mut impl Rng) -> Result<Phonebook> {
        if size == 0 || size > MAX_SIZE {
            return Err(EvalError::Options(format!(
                "phonebook size {size} is outside 1..={MAX_SIZE}"
            )));
        }
        let mut names: Vec<(usize, usize)> = (0..FIRST.len())
            .flat_map(|f| (0..LAST.len()).map(move |l| (f, l)))
            .collect();
        names.shuffle(rng);
        let mut numbers = std::collections::HashSet::new();
        let entries = names[..size]
            .iter()
            .map(|&(f, l)| {
                let number = loop {
                    let n = format!(
                        "{}-{:03}-{:04}",
                        rng.random_range(200..1000),
                        rng.random_range(0..1000),
                        rng.random_range(0..10_000)
                    );
                    if numbers.insert(n.clone()) {
                        break n;
                    }
                };
                (format!("{} {}", FIRST[f], LAST[l]), number)
            })
            .collect();
        Ok(Phonebook {
            entries,
            query: rng.random_range(0..size),
        })
    }

    pub fn prompt(&self) -> String {
        let mut text = String::from("Here is a phone book:\n");
        for (name, number) in &self.entries {
            text.push_str(&format!("{name}: {number}\n"));
        }
        let name = &self.entries[self.query].0;
        text.push_str(&format!(
            "What is the phone number of {name}? The phone number of {name} is"
        ));
        text
    }

    /// What should follow the prompt.
    pub fn answer(&self) -> String {
        format!(" {}", self.entries[self.query].1)
    }
}

/// Is `output` the number? Leading spaces ignored; the number must not run on into more digits.
pub fn is_correct(output: &str, number: &str) -> bool {
    let out = output.trim_start();
    out.starts_with(number)
        && !out[number.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
}

#[derive(Debug, Clone, Serialize)]
pub struct PhonebookOptions {
    pub sizes: Vec<usize>,
    pub trials: usize,
    pub seed: u64,
    pub chunk: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhonebookTrial {
    pub name: String,
    pub number: String,
    pub prompt_tokens: usize,
    pub output: String,
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhonebookSize {
    pub size: usize,
    pub accuracy: f64,
    /// Mean prompt length in tokens.
    pub mean_tokens: f64,
    pub trials: Vec<PhonebookTrial>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhonebookReport {
    pub sizes: Vec<PhonebookSize>,
}

/// `trials` books of each size, answered greedily; `on_trial()` after each.
pub fn evaluate_phonebook(
    model: &Engine,
    tokenizer: &TextTokenizer,
    options: &PhonebookOptions,
    mut on_trial: impl FnMut(),
) -> Result<PhonebookReport> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut sizes = Vec::new();
    for &size in &options.sizes {
        let mut trials = Vec::new();
        for _ in 0..options.trials {
            let book = Phonebook::generate(size, &mut rng)?;
            let prompt = tokenizer.encode(&book.prompt())?;
            let answer = tokenizer.encode(&book.answer())?;
            let out = greedy_decode(model, &prompt, answer.len() + 2, options.chunk, None)?;
            let output = tokenizer.decode(&out)?;
            let (name, number) = book.entries[book.query].clone();
            trials.push(PhonebookTrial {
                correct: is_correct(&output, &number),
                name,
                number,
                prompt_tokens: prompt.len(),
                output,
            });
            on_trial();
        }
        let n = trials.len().max(1) as f64;
        sizes.push(PhonebookSize {
            size,
            accuracy: trials.iter().filter(|t| t.correct).count() as f64 / n,
            mean_tokens: trials.iter().map(|t| t.prompt_tokens as f64).sum::<f64>() / n,
            trials,
        });
    }
    Ok(PhonebookReport { sizes })
}
