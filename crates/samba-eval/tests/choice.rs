//! Multiple choice: task formats, bad input, and scores checked against a full forward.

mod common;

use std::path::{Path, PathBuf};

use samba_eval::choice::{
    evaluate_choice, parse_task, read_task, score_example, tokenize_example, ChoiceExample,
    ChoiceTask,
};
use samba_eval::{EvalError, EvalModel};
use samba_runtime::{Device, GpuDtype};

const BIGBENCH: &str = r#"{
  "name": "toy_task",
  "description": "a toy",
  "keywords": ["logic"],
  "examples": [
    {"input": "Is the sky blue?", "target_scores": {"yes": 1, "no": 0}},
    {"input": "Pick one", "target_scores": {"a": 0.5, "b": 0.5, "c": 0}},
    {"input": "Say hello", "target": "hello"}
  ]
}"#;

#[test]
fn bigbench_task_json_is_read_with_its_prefixes() {
    let task = parse_task(Path::new("toy/task.json"), BIGBENCH).expect("parse");
    assert_eq!(task.name, "toy_task");
    assert_eq!(task.format, "bigbench");
    assert_eq!(task.skipped, 1, "the generative example is skipped");
    assert_eq!(task.examples.len(), 2);
    let ex = &task.examples[0];
    assert_eq!(ex.context, "\nQ: Is the sky blue?\nA: ");
    assert_eq!(ex.choices, ["no", "yes"]);
    assert_eq!(ex.correct, [1]);
    assert_eq!(task.examples[1].correct, [0, 1], "ties are all correct");

    let custom = r#"{"example_input_prefix": "", "example_output_prefix": " Answer:",
        "examples": [{"input": "x", "target_scores": {"p": 0, "q": 1}}]}"#;
    let task = parse_task(Path::new("custom/task.json"), custom).expect("parse");
    assert_eq!(task.name, "custom");
    assert_eq!(task.examples[0].context, "x Answer:");
}

#[test]
fn jsonl_tasks_are_read() {
    let text = "{\"context\": \"2 + 2 =\", \"choices\": [\" 4\", \" 5\"], \"answer\": 0}\n\n\
                {\"context\": \"Sky:\", \"choices\": [\" red\", \" blue\", \" green\"], \"answer\": 1}\n";
    let task = parse_task(Path::new("dir/arith.jsonl"), text).expect("parse");
    assert_eq!(task.format, "jsonl");
    assert_eq!(task.name, "arith");
    assert_eq!(task.examples.len(), 2);
    assert_eq!(task.examples[1].choices, [" red", " blue", " green"]);
    assert_eq!(task.examples[1].correct, [1]);
    // One line is a JSONL file too.
    let one = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 1}";
    assert_eq!(
        parse_task(Path::new("one.jsonl"), one)
            .expect("parse")
            .examples
            .len(),
        1
    );
}

fn message(r: Result<ChoiceTask, EvalError>) -> String {
    r.expect_err("should be refused").to_string()
}

#[test]
fn bad_task_files_are_errors_naming_the_file() {
    let path = Path::new("tasks/weird.json");
    for text in ["[1, 2, 3]", "{\"data\": []}", "plain words", ""] {
        let err = message(parse_task(path, text));
        assert!(
            err.contains("tasks/weird.json") && err.contains("not a multiple-choice task file"),
            "{err}"
        );
    }
    let bad_answer = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 2}";
    let err = message(parse_task(path, bad_answer));
    assert!(
        err.contains("tasks/weird.json") && err.contains("line 1"),
        "{err}"
    );
    let broken = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 0}\n{oops\n";
    let err = message(parse_task(path, broken));
    assert!(err.contains("line 2"), "{err}");
    let generative = r#"{"examples": [{"input": "x", "target": "y"}]}"#;
    let err = message(parse_task(path, generative));
    assert!(err.contains("no multiple-choice examples"), "{err}");
    let err = message(read_task(Path::new("/nonexistent/task.json")));
    assert!(err.contains("/nonexistent/task.json"), "{err}");
}

fn example(context: &str, choices: &[&str], answer: usize) -> ChoiceExample {
    ChoiceExample {
        context: context.to_string(),
        choices: choices.iter().map(|c| c.to_string()).collect(),
        correct: vec![answer],
    }
}

#[test]
fn scores_match_a_full_forward_and_picks_follow_them() {
    let tok = common::tokenizer();
    let model = common::model(tok.vocab_size());
    let examples = [
        example("The sky is", &[" blue", " green", " yellow and green"], 0),
        example("Here we go. ", &["There", "back", "again"], 2),
        example("What is the pass key?", &[" 12345", " 54321"], 1),
    ];
    for ex in &examples {
        let s = score_example(&model, &tok, ex, 3).expect("score");
        let t = tokenize_example(&tok, ex).expect("tokenize");
        let (context, continuations, bytes) = (t.context, t.continuations, t.bytes);
        assert_eq!(context[0], tok.eos_id());
        for (k, cont) in continuations.iter().enumerate() {
            let mut all = context.clone();
            all.extend(cont);
            let lp = common::direct_logprobs(&model, &all);
            let want: f64 = lp[context.len() - 1..].iter().sum();
            assert!(
                (s.loglikelihood[k] - want).abs() < 1e-4,
                "{} vs {want}",
                s.loglikelihood[k]
            );
            assert_eq!(s.bytes[k], bytes[k]);
        }
        let best = |v: Vec<f64>| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        assert_eq!(s.pick, best(s.loglikelihood.clone()));
        let norm = s
            .loglikelihood
            .iter()
            .zip(&s.bytes)
            .map(|(l, b)| l / *b as f64)
            .collect();
        assert_eq!(s.pick_norm, best(norm));
    }
    // The trailing space of "Here we go. " moved into each choice.
    let t = tokenize_example(&tok, &examples[1]).expect("tokenize");
    let (conts, bytes) = (t.continuations, t.bytes);
    assert_eq!(tok.decode(&conts[0]).expect("decode"), " There");
    assert_eq!(bytes[0], " There".len());
}

#[test]
fn a_choice_extended_by_more_tokens_always_loses_on_likelihood() {
    // log p(x y) = log p(x) + log p(y | x) < log p(x): whatever the model, the shorter choice
    // wins on summed log-likelihood, so accuracy is 1 when it is the answer and 0 when not.
    let tok = common::tokenizer();
    let model = common::model(tok.vocab_size());
    let right = ChoiceTask {
        path: PathBuf::from("forced.jsonl"),
        name: "forced".into(),
        format: "jsonl",
        examples: vec![
            example("The sky", &[" is blue. The sky is blue.", " is blue."], 1),
            example("Here", &[" we", " we go. Here we go."], 0),
        ],
        skipped: 0,
    };
    let mut wrong = right.clone();
    wrong
        .examples
        .iter_mut()
        .for_each(|e| e.correct = vec![1 - e.correct[0]]);
    let report = evaluate_choice(&model, &tok, &[right, wrong], None, 4, || {}).expect("eval");
    assert_eq!(report.tasks[0].acc, 1.0);
    assert_eq!(report.tasks[1].acc, 0.0);
    assert_eq!(report.tasks[0].chance, 0.5);
    assert_eq!(report.mean_acc, 0.5);
    assert_eq!(report.tasks[0].examples, 2);
}

#[test]
fn a_model_smaller_than_the_tokenizer_is_refused_naming_both() {
    let tok = common::tokenizer();
    let model = common::model(tok.vocab_size() - 1);
    let err = EvalModel::new(
        Path::new("models/tiny"),
        model,
        tok,
        Path::new("tok/tokenizer.json"),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("models/tiny") && err.contains("tok/tokenizer.json"),
        "{err}"
    );
}

#[test]
fn a_missing_model_folder_is_an_error_naming_it() {
    let err = EvalModel::load(
        Path::new("/nonexistent/model"),
        None,
        &Device::Cpu,
        GpuDtype::Bf16,
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}
