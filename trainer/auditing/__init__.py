r"""The audit room: finds the images of a built rare_species dataset worth a second look, and proposes an
exclusion list.

    python -m trainer.audit --data_dir=DATA --config=inception_342 --backbone=inceptionv3 --weights=imagenet \
        --out=audit/
    # look at audit/review.html, edit audit/exclusions.csv, then rebuild without those images (the audit
    # prints this command for the audited config):
    tfds build rare_species --imports=tfds_rarespecies --manual_dir=DOWNLOAD --data_dir=DATA \
        --config='{"name": "inception_342_audited", "short_side": 342, "exclusions": "audit/exclusions.csv"}'

Earlier projects found maps, text pages, specimen tables and people among the photos (about 3%) and removed
them by hand. Here one pass over every split measures pixel statistics and reads the builder's hashes, the
frozen-feature cache embeds every image once, and the scores turn both into four lists: non-photos, family
outliers, label issues (cleanlab on out-of-fold probabilities) and duplicate clusters (with the splits they
straddle). Only evidence that holds alone or agrees between detectors is proposed for exclusion, label issues
only when the head behind them reads the families well, and never more than a capped share of the images;
every other flag is left, ranked, for a person.
"""
