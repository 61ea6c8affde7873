"""The pictures people look at: confusion matrices, reliability and risk-coverage plots, contact sheets and
static pages, drawn with matplotlib and Pillow and shared by training (TensorBoard's images), evaluation and the
audit. A leaf beside the numbers: no TensorFlow (tests/test_rooms.py)."""
