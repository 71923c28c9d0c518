//! The phonebook generator: distinct names and numbers, the question about one of them.

use std::collections::HashSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use samba_eval::phonebook::{is_correct, Phonebook, MAX_SIZE};

#[test]
fn a_book_lists_every_entry_and_asks_about_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for size in [1, 20, 160] {
        let book = Phonebook::generate(size, &mut rng).expect("book");
        assert_eq!(book.entries.len(), size);
        let names: HashSet<_> = book.entries.iter().map(|e| &e.0).collect();
        let numbers: HashSet<_> = book.entries.iter().map(|e| &e.1).collect();
        assert_eq!(names.len(), size, "names are distinct");
        assert_eq!(numbers.len(), size, "numbers are distinct");
        let prompt = book.prompt();
        let lines: Vec<&str> = prompt.lines().collect();
        assert_eq!(lines[0], "Here is a phone book:");
        assert_eq!(lines.len(), size + 2);
        for (line, (name, number)) in lines[1..=size].iter().zip(&book.entries) {
            assert_eq!(*line, format!("{name}: {number}"));
            let digits: Vec<&str> = number.split('-').collect();
            assert_eq!(
                digits.iter().map(|d| d.len()).collect::<Vec<_>>(),
                [3, 3, 4]
            );
        }
        let (name, number) = &book.entries[book.query];
        assert_eq!(
            lines[size + 1],
            format!("What is the phone number of {name}? The phone number of {name} is")
        );
        assert_eq!(book.answer(), format!(" {number}"));
    }
}

#[test]
fn sizes_outside_the_name_pool_are_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert!(Phonebook::generate(0, &mut rng).is_err());
    assert!(Phonebook::generate(MAX_SIZE + 1, &mut rng).is_err());
}

#[test]
fn only_the_exact_number_counts() {
    assert!(is_correct(" 415-203-9981\n", "415-203-9981"));
    assert!(!is_correct(" 415-203-99812", "415-203-9981"));
    assert!(!is_correct(" 415-203-998", "415-203-9981"));
}
