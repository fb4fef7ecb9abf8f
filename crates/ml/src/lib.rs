//! Platform-neutral ML: datasets, data validation, training, evaluation, prediction, drift statistics.
