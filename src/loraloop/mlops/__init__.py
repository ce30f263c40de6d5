"""The maintenance loop: feedback on served answers, and (later) drift, the gate, retraining."""
