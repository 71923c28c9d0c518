//! Zero-shot multiple choice by log-likelihood, as lm-evaluation-harness scores it:
//! - `acc`: the choice with the largest sum of log p(choice tokens | context);
//! - `acc_norm`: the choice with the largest log-likelihood per byte of the choice text
//!   (so long choices are not punished for their length).
//!
//! An example counts as correct when the chosen choice is one of the correct ones.
//!
//! Two task formats:
//! - bigbench `task.json`: `{"examples": [{"input": str, "target_scores": {choice: score}}]}`;
//!   the correct choices are those with the highest score. The context is
//!   `example_input_prefix + input + example_output_prefix` (bigbench's defaults "\nQ: " and
//!   "\nA: ", or the task's own), the continuation the choice. Examples without
//!   `target_scores` (generative ones) are skipped and counted.
//! - JSON Lines: one `{"context": str, "choices": [str], "answer": index}` per line; the
//!   continuation is the choice exactly as written (put the separating space in it, or at the
//!   end of the context).
//!
//! Trailing spaces of a context move to the start of each continuation before tokenizing, so
//! " yes" is one word as the tokenizer saw it in training. Every context starts with the
//! end-of-document token, as a document in training data does after its separator.

use std::path::{Path, PathBuf};

use samba_data::TextTokenizer;
use samba_runtime::Engine;
use serde::Serialize;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::scoring::continuation_logprobs;

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceExample {
    pub context: String,
    pub choices: Vec<String>,
    /// Indices of the correct choices (one, or several tied best).
    pub correct: Vec<usize>,
}

/// The examples of one task file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceTask {
    pub path: PathBuf,
    pub name: String,
    pub format: &'static str,
    pub examples: Vec<ChoiceExample>,
    /// Examples not multiple choice (bigbench generative examples), left out.
    pub skipped: usize,
}

fn bad(path: &Path, what: String) -> EvalError {
    EvalError::BadTask {
        path: path.to_path_buf(),
        what,
    }
}

fn unknown(path: &Path, why: &str) -> EvalError {
    EvalError::UnknownTaskFormat {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Reads a task file, recognising its format from its content.
pub fn read_task(path: &Path) -> Result<ChoiceTask> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    parse_task(path, &text)
}

/// Parses a task file's `text`; `path` names it in errors and the report.
pub fn parse_task(path: &Path, text: &str) -> Result<ChoiceTask> {
    // One JSON document with "examples": bigbench. Otherwise JSON Lines.
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(task)) if task.contains_key("examples") => parse_bigbench(path, &task),
        Ok(Value::Object(line)) if line.contains_key("context") => parse_jsonl(path, text),
        Ok(_) => Err(unknown(
            path,
            "a JSON document without \"examples\" (nor a JSON line with \"context\")",
        )),
        Err(_) if text.trim_start().starts_with('{') && text.trim().lines().count() > 1 => {
            parse_jsonl(path, text)
        }
        Err(e) => Err(unknown(path, &format!("not JSON: {e}"))),
    }
}

fn task_name(path: &Path, task: Option<&serde_json::Map<String, Value>>) -> String {
    if let Some(name) = task.and_then(|t| t.get("name")).and_then(Value::as_str) {
        return name.to_string();
    }
    // bigbench keeps each task in <name>/task.json.
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    match stem.as_deref() {
        Some("task") => path
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "task".into()),
        Some(s) => s.to_string(),
        None => path.display().to_string(),
    }
}

fn parse_bigbench(path: &Path, task: &serde_json::Map<String, Value>) -> Result<ChoiceTask> {
    let Some(examples) = task.get("examples").and_then(Value::as_array) else {
        return Err(unknown(path, "\"examples\" is not a list"));
    };
    let prefix = |key: &str, default: &str| {
        task.get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let input_prefix = prefix("example_input_prefix", "\nQ: ");
    let output_prefix = prefix("example_output_prefix", "\nA: ");
    let task_prefix = prefix("task_prefix", "");
    let mut out = Vec::new();
    let mut skipped = 0;
    for (i, ex) in examples.iter().enumerate() {
        let Some(scores) = ex.get("target_scores").and_then(Value::as_object) else {
            skipped += 1;
            continue;
        };
        let input = ex
            .get("input")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(path, format!("example {i}: no string \"input\"")))?;
        if scores.len() < 2 {
            return Err(bad(
                path,
                format!("example {i}: fewer than two choices in \"target_scores\""),
            ));
        }
        let mut choices = Vec::new();
        let mut values = Vec::new();
        for (choice, score) in scores {
            let v = score.as_f64().ok_or_else(|| {
                bad(
                    path,
                    format!("example {i}: the score of choice '{choice}' is not a number"),
                )
            })?;
            choices.push(choice.clone());
            values.push(v);
        }
        let best = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let correct = (0..values.len()).filter(|&k| values[k] == best).collect();
        out.push(ChoiceExample {
            context: format!("{task_prefix}{input_prefix}{input}{output_prefix}"),
            choices,
            correct,
        });
    }
    if out.is_empty() {
        return Err(bad(
            path,
            format!("no multiple-choice examples (none of the {skipped} examples has \"target_scores\")"),
        ));
    }
    Ok(ChoiceTask {
        path: path.to_path_buf(),
        name: task_name(path, Some(task)),
        format: "bigbench",
        examples: out,
        skipped,
    })
}

fn parse_jsonl(path: &Path, text: &str) -> Result<ChoiceTask> {
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: String| bad(path, format!("line {}: {what}", i + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let context = v
            .get("context")
            .and_then(Value::as_str)
            .ok_or_else(|| at("no string \"context\"".into()))?;
        let choices: Vec<String> = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().map(|s| s.as_str().map(str::to_string)).collect())
            .ok_or_else(|| at("\"choices\" is not a list of strings".into()))?;
        if choices.len() < 2 {
            return Err(at("fewer than two \"choices\"".into()));
        }
        let answer =
            v.get("answer")
                .and_then(Value::as_u64)
                .ok_or_else(|| at("\"answer\" is not a choice index".into()))? as usize;
        if answer >= choices.len() {
            return Err(at(format!(
                "\"answer\" {answer} is not an index into the {} choices",
                choices.len()
            )));
        }
        examples.push(ChoiceExample {
            context: context.to_string(),
            choices,
            correct: vec![answer],
        });
    }
    if examples.is_empty() {
        return Err(bad(path, "no examples".into()));
    }
    Ok(ChoiceTask {
        path: path.to_path_buf(),
        name: task_name(path, None),
        format: "jsonl",
        examples,
        skipped: 0,
    })
}

/// The scores of one example.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChoiceScores {
    /// Sum of log p of each choice's tokens.
    pub loglikelihood: Vec<f64>,
    /// Bytes of each choice's continuation text (what acc_norm divides by).
    pub bytes: Vec<usize>,
    /// argmax of loglikelihood.
    pub pick: usize,
    /// argmax of loglikelihood / bytes.
    pub pick_norm: usize,
}

fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// An example as token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedExample {
    /// The end-of-document token, then the context without its trailing spaces.
    pub context: Vec<u32>,
    /// Each choice, after the context's trailing spaces.
    pub continuations: Vec<Vec<u32>>,
    /// Bytes of each continuation's text (what acc_norm divides by).
    pub bytes: Vec<usize>,
}

/// Tokens of the context (after the end-of-document token) and of each continuation.
pub fn tokenize_example(
    tokenizer: &TextTokenizer,
    example: &ChoiceExample,
) -> Result<TokenizedExample> {
    let trimmed = example.context.trim_end_matches(' ');
    let moved = &example.context[trimmed.len()..];
    let mut context = vec![tokenizer.eos_id()];
    context.extend(tokenizer.encode(trimmed)?);
    let mut continuations = Vec::new();
    let mut bytes = Vec::new();
    for choice in &example.choices {
        let text = format!("{moved}{choice}");
        bytes.push(text.len());
        continuations.push(tokenizer.encode(&text)?);
    }
    Ok(TokenizedExample {
        context,
        continuations,
        bytes,
    })
}

/// Scores every choice of one example.
pub fn score_example(
    model: &Engine,
    tokenizer: &TextTokenizer,
    example: &ChoiceExample,
    chunk: usize,
) -> Result<ChoiceScores> {
    let TokenizedExample {
        context,
        continuations,
        bytes,
    } = tokenize_example(tokenizer, example)?;
    let loglikelihood = continuation_logprobs(model, &context, &continuations, chunk)?;
    let pick = argmax(loglikelihood.iter().copied());
    let pick_norm = argmax(
        loglikelihood
            .iter()
            .zip(&bytes)
            .map(|(ll, &b)| ll / b.max(1) as f64),
    );
    Ok(ChoiceScores {
        loglikelihood,
        bytes,
        pick,
        pick_norm,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub path: PathBuf,
    pub name: String,
    pub format: &'static str,
    pub examples: usize,
    pub skipped: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// Expected accuracy of guessing: mean over examples of correct / choices.
    pub chance: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChoiceReport {
    pub tasks: Vec<TaskResult>,
    /// Mean of the tasks' accuracies (each task weighs the same).
    pub mean_acc: f64,
    pub mean_acc_norm: f64,
}

/// Scores every example of every task (at most `limit` per task); `on_example()` after each.
pub fn evaluate_choice(
    model: &Engine,
    tokenizer: &TextTokenizer,
    tasks: &[ChoiceTask],
    limit: Option<usize>,
    chunk: usize,
    mut on_example: impl FnMut(),
) -> Result<ChoiceReport> {
    let mut results = Vec::new();
    for task in tasks {
        let examples =
            &task.examples[..limit.map_or(task.examples.len(), |l| l.min(task.examples.len()))];
        let (mut acc, mut acc_norm, mut chance) = (0usize, 0usize, 0.0);
        for ex in examples {
            let s = score_example(model, tokenizer, ex, chunk)?;
            acc += usize::from(ex.correct.contains(&s.pick));
            acc_norm += usize::from(ex.correct.contains(&s.pick_norm));
            chance += ex.correct.len() as f64 / ex.choices.len() as f64;
            on_example();
        }
        let n = examples.len().max(1) as f64;
        results.push(TaskResult {
            path: task.path.clone(),
            name: task.name.clone(),
            format: task.format,
            examples: examples.len(),
            skipped: task.skipped,
            acc: acc as f64 / n,
            acc_norm: acc_norm as f64 / n,
            chance: chance / n,
        });
    }
    let t = results.len().max(1) as f64;
    Ok(ChoiceReport {
        mean_acc: results.iter().map(|r| r.acc).sum::<f64>() / t,
        mean_acc_norm: results.iter().map(|r| r.acc_norm).sum::<f64>() / t,
        tasks: results,
    })
}
