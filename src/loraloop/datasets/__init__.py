"""datasets: uploaded training data, read in the common chat formats, cleaned and split.

``formats`` reads JSON Lines into normalised ``messages`` with line-numbered problems;
``cleaning`` removes exact and near duplicates and splits off a validation set.
"""
