"""The numbers: metric definitions, calibration and the tree's maths, one definition of each, shared by training
and evaluation. A leaf: numpy, pandas, scipy and scikit-learn only, no TensorFlow (tests/test_rooms.py)."""
