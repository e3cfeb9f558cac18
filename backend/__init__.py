"""A Label Studio ML backend serving and retraining a BentoML Keras classifier."""
