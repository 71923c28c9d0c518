//! Exact resume: a run interrupted (Ctrl-C, or a crash after a checkpoint) and resumed ends with
//! the same parameters, bit for bit, as the run that was never interrupted.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{bits, patterned_tokens, small_options, tiny_backend, Faulty};
use samba_train::checkpoint::{latest_checkpoint, list_checkpoints, load_checkpoint};
use samba_train::metrics::{read_metrics, Record, METRICS_FILE};
use samba_train::{MemoryValidation, MemoryWindows, StopReason, TrainOptions, Trainer};

const VOCAB: usize = 64;
const STEPS: u64 = 8;

fn data(options: &TrainOptions) -> (MemoryWindows, MemoryValidation) {
    let tokens = patterned_tokens(4000, VOCAB as u32, 1);
    let held_out = patterned_tokens(400, VOCAB as u32, 2);
    (
        MemoryWindows::new(tokens, options.seq_len, options.seed).unwrap(),
        MemoryValidation::new(held_out),
    )
}

/// What an uninterrupted run ends with.
struct Straight {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// (step, training loss) of every step.
    losses: Vec<(u64, f64)>,
}

fn straight_run(run: &std::path::Path) -> Straight {
    let options = small_options(STEPS);
    let (source, mut val) = data(&options);
    let mut t = Trainer::new(run, options, tiny_backend(VOCAB), source).unwrap();
    t.set_validation(&mut val).unwrap();
    let outcome = t.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Finished);
    assert_eq!(outcome.step, STEPS);
    let backend = t.into_backend();
    let (m, v) = samba_train::TrainBackend::optimizer_state(&backend);
    Straight {
        params: backend.model.params.clone(),
        m,
        v,
        losses: train_losses(run),
    }
}

fn train_losses(run: &std::path::Path) -> Vec<(u64, f64)> {
    read_metrics(&run.join(METRICS_FILE))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } => Some((step, loss)),
            _ => None,
        })
        .collect()
}

fn resume_to_the_end(run: &std::path::Path) -> Vec<f32> {
    let options = small_options(STEPS);
    let (source, mut val) = data(&options);
    let mut t = Trainer::resume(run, options, tiny_backend(VOCAB), source).unwrap();
    t.set_validation(&mut val).unwrap();
    let outcome = t.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Finished);
    assert_eq!(outcome.step, STEPS);
    t.into_backend().model.params
}

#[test]
fn interrupted_then_resumed_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let Straight {
        params: straight,
        m,
        v,
        losses,
    } = straight_run(&dir.path().join("straight"));

    // Ctrl-C arrives during step 5: the loop finishes step 5, saves, and stops.
    let run = dir.path().join("interrupted");
    let options = small_options(STEPS);
    let (source, mut val) = data(&options);
    let flag = Arc::new(AtomicBool::new(false));
    let mut backend = Faulty::new(tiny_backend(VOCAB));
    backend.stop_at = Some((5, flag.clone()));
    let mut t = Trainer::new(&run, options, backend, source).unwrap();
    t.set_validation(&mut val).unwrap();
    t.set_stop_flag(flag);
    let outcome = t.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Interrupted);
    assert_eq!(outcome.step, 5);
    assert_eq!(
        latest_checkpoint(&run)
            .unwrap()
            .unwrap()
            .file_name()
            .unwrap(),
        "step-000005"
    );

    // Same command plus --resume.
    let resumed = resume_to_the_end(&run);
    assert!(
        bits(&resumed) == bits(&straight),
        "resumed parameters differ from the uninterrupted run's"
    );
    let last = load_checkpoint(&latest_checkpoint(&run).unwrap().unwrap()).unwrap();
    assert_eq!(last.state.step, STEPS);
    assert!(bits(&last.params) == bits(&straight));
    assert!(bits(&last.m) == bits(&m) && bits(&last.v) == bits(&v));
    // The metrics read as one straight run: the same losses, each step once.
    assert_eq!(train_losses(&run), losses);
}

#[test]
fn crashed_after_a_checkpoint_then_resumed_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let Straight {
        params: straight,
        losses,
        ..
    } = straight_run(&dir.path().join("straight"));

    // Checkpoints at steps 3 and 6; the process dies during step 8 (as kill -9 would: no save).
    let run = dir.path().join("crashed");
    let options = small_options(STEPS);
    let (source, mut val) = data(&options);
    let mut backend = Faulty::new(tiny_backend(VOCAB));
    backend.crash_at = Some(8);
    let mut t = Trainer::new(&run, options, backend, source).unwrap();
    t.set_validation(&mut val).unwrap();
    assert!(t.run().is_err());
    let steps: Vec<u64> = list_checkpoints(&run)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![3, 6]);
    // The metrics file holds step 7 too, which the resumed run will redo.
    assert_eq!(train_losses(&run).len(), 7);

    let resumed = resume_to_the_end(&run);
    assert!(
        bits(&resumed) == bits(&straight),
        "resumed parameters differ from the uninterrupted run's"
    );
    assert_eq!(train_losses(&run), losses);
    // keep_last = 2: steps 6 and 8 remain.
    let steps: Vec<u64> = list_checkpoints(&run)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![6, 8]);
}

#[test]
fn a_fresh_run_refuses_a_folder_with_checkpoints_and_resume_checks_options() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let options = small_options(3);
    let (source, _) = data(&options);
    Trainer::new(&run, options.clone(), tiny_backend(VOCAB), source)
        .unwrap()
        .run()
        .unwrap();

    let (source, _) = data(&options);
    let err = Trainer::new(&run, options.clone(), tiny_backend(VOCAB), source)
        .err()
        .expect("a second fresh run in the same folder is refused");
    assert!(err.to_string().contains("--resume"), "{err}");

    let changed = TrainOptions {
        lr: 5e-3,
        ..options.clone()
    };
    let (source, _) = data(&changed);
    let err = Trainer::resume(&run, changed, tiny_backend(VOCAB), source)
        .err()
        .expect("resuming with another learning rate is refused");
    assert!(err.to_string().contains("--lr"), "{err}");

    let (source, _) = data(&options);
    let err = Trainer::resume(&run, options, tiny_backend(VOCAB + 1), source)
        .err()
        .expect("resuming another model shape is refused");
    assert!(err.to_string().contains("shape"), "{err}");
}
