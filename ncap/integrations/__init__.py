"""Optional integrations of the ncap predictor into AutoML loops.

    ncap.integrations.rule       the stopping rule both use (numpy/scipy only)
    ncap.integrations.optuna     CapacitancePruner, report_beta         (pip install 'ncap[optuna]')
    ncap.integrations.ray_tune   CapacitanceScheduler                   (pip install 'ncap[ray]')

Nothing is imported here: ``import ncap`` and ``import ncap.integrations`` import neither Optuna nor Ray.
"""
