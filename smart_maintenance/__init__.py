"""smart-maintenance: streaming predictive maintenance on Bytewax."""
