//! Faults: non-finite steps are skipped and too many in a row stop the run with the last good
//! checkpoint intact; interrupted checkpoint writes never break loading the last good one.

mod common;

use std::path::Path;

use common::{bits, patterned_tokens, small_options, tiny_backend, Faulty};
use samba_train::checkpoint::{
    latest_checkpoint, list_checkpoints, load_checkpoint, load_latest, CHECKPOINTS_DIR,
    LATEST_FILE, OPTIMIZER_FILE,
};
use samba_train::metrics::{read_metrics, Record, METRICS_FILE};
use samba_train::{MemoryWindows, StopReason, TrainBackend, Trainer};

const VOCAB: usize = 64;

fn source() -> MemoryWindows {
    MemoryWindows::new(patterned_tokens(4000, VOCAB as u32, 1), 16, 3407).unwrap()
}

fn skipped_steps(run: &Path) -> Vec<u64> {
    read_metrics(&run.join(METRICS_FILE))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Skipped { step, .. } => Some(step),
            _ => None,
        })
        .collect()
}

#[test]
fn non_finite_steps_are_skipped_without_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut backend = Faulty::new(tiny_backend(VOCAB));
    backend.nan_loss.insert(3);
    backend.inf_grad.insert(5);
    let mut t = Trainer::new(&run, small_options(6), backend, source()).unwrap();
    let outcome = t.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Finished);
    assert_eq!(outcome.step, 6);
    assert_eq!(outcome.skipped_steps, 2);
    assert_eq!(skipped_steps(&run), vec![3, 5]);
    assert_eq!(
        t.state().optimizer_steps,
        4,
        "AdamW ran only on the good steps"
    );
    assert!(t.backend().params().iter().all(|p| p.is_finite()));
}

#[test]
fn a_skipped_step_leaves_the_parameters_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // Two steps, the second NaN: the parameters after it are those after step 1.
    let one = dir.path().join("one");
    let mut t = Trainer::new(&one, small_options(1), tiny_backend(VOCAB), source()).unwrap();
    t.run().unwrap();
    let after_one = t.backend().params();

    let two = dir.path().join("two");
    let mut backend = Faulty::new(tiny_backend(VOCAB));
    backend.nan_loss.insert(2);
    let mut t = Trainer::new(&two, small_options(2), backend, source()).unwrap();
    t.run().unwrap();
    assert!(bits(&t.backend().params()) == bits(&after_one));
}

#[test]
fn too_many_non_finite_steps_stop_the_run_leaving_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut backend = Faulty::new(tiny_backend(VOCAB));
    backend.nan_from = Some(5);
    let mut options = small_options(20);
    options.save_every = 2;
    options.max_bad_steps = 3;
    let mut t = Trainer::new(&run, options, backend, source()).unwrap();
    let outcome = t.run().unwrap();
    assert_eq!(outcome.reason, StopReason::TooManyBadSteps);
    assert_eq!(outcome.step, 7, "steps 5, 6, 7 were bad");
    assert_eq!(skipped_steps(&run), vec![5, 6, 7]);
    // Step 6 was due a checkpoint but was not a good step: the latest stays at step 4.
    let latest = latest_checkpoint(&run).unwrap().unwrap();
    assert!(latest.ends_with("step-000004"), "{}", latest.display());
    let good = load_checkpoint(&latest).unwrap();
    assert_eq!(good.state.step, 4);
    assert!(good.params.iter().all(|p| p.is_finite()));
    assert_eq!(outcome.last_checkpoint.as_deref(), Some(latest.as_path()));
}

/// A run with checkpoints at steps 2 and 4 (keep_last 2).
fn run_with_two_checkpoints(run: &Path) {
    let mut options = small_options(4);
    options.save_every = 2;
    Trainer::new(run, options, tiny_backend(VOCAB), source())
        .unwrap()
        .run()
        .unwrap();
    let steps: Vec<u64> = list_checkpoints(run).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![2, 4]);
}

#[test]
fn leftovers_of_a_killed_save_do_not_break_loading() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_with_two_checkpoints(&run);
    let root = run.join(CHECKPOINTS_DIR);

    // A save of step 6 killed half-way: its temporary folder holds a truncated moments file,
    // and a temporary `latest` was cut short before its rename.
    let tmp = root.join(".tmp-step-000006-999999");
    std::fs::create_dir_all(&tmp).unwrap();
    let moments = std::fs::read(root.join("step-000004").join(OPTIMIZER_FILE)).unwrap();
    std::fs::write(tmp.join(OPTIMIZER_FILE), &moments[..moments.len() / 2]).unwrap();
    std::fs::write(root.join(format!(".{LATEST_FILE}.tmp-999999")), "step-0000").unwrap();

    let (checkpoint, warnings) = load_latest(&run).unwrap().unwrap();
    assert_eq!(checkpoint.state.step, 4);
    assert!(warnings.is_empty(), "{warnings:?}");

    // Resuming works, and the next save clears the leftovers.
    let mut options = small_options(6);
    options.save_every = 2;
    let mut t = Trainer::resume(&run, options, tiny_backend(VOCAB), source()).unwrap();
    assert_eq!(t.run().unwrap().step, 6);
    assert!(!tmp.exists(), "the killed save's folder was removed");
    assert!(!root.join(format!(".{LATEST_FILE}.tmp-999999")).exists());
}

#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_with_two_checkpoints(&run);
    let root = run.join(CHECKPOINTS_DIR);
    let path = root.join("step-000004").join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();

    let err = load_checkpoint(&root.join("step-000004")).err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains(OPTIMIZER_FILE) && message.contains("truncated"),
        "{message}"
    );

    let (checkpoint, warnings) = load_latest(&run).unwrap().unwrap();
    assert_eq!(checkpoint.state.step, 2);
    assert!(
        warnings.iter().any(|w| w.contains("unusable")),
        "{warnings:?}"
    );

    // A `latest` that names nothing sensible is reported and passed over too.
    std::fs::write(root.join(LATEST_FILE), "garbage").unwrap();
    let (checkpoint, warnings) = load_latest(&run).unwrap().unwrap();
    assert_eq!(checkpoint.state.step, 2);
    assert!(
        warnings.iter().any(|w| w.contains("garbage")),
        "{warnings:?}"
    );
}

#[test]
fn a_checkpoint_whose_parts_disagree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_with_two_checkpoints(&run);
    let ckpt = run.join(CHECKPOINTS_DIR).join("step-000004");
    let trainer = ckpt.join("trainer.json");
    let text = std::fs::read_to_string(&trainer).unwrap();
    std::fs::write(&trainer, text.replace("\"step\": 4", "\"step\": 5")).unwrap();
    let message = load_checkpoint(&ckpt).err().unwrap().to_string();
    assert!(
        message.contains("step 5") && message.contains("step 4"),
        "{message}"
    );

    std::fs::remove_file(ckpt.join("model").join("model.safetensors")).unwrap();
    std::fs::write(&trainer, text).unwrap();
    let message = load_checkpoint(&ckpt).err().unwrap().to_string();
    assert!(message.contains("model.safetensors"), "{message}");
}
