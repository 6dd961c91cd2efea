"""Track β_eff in your own training loop and predict the final accuracy early.

A small ReLU MLP (the capacitance probe: >= 3 hidden Linear layers + head) learns scikit-learn's digits;
after every epoch the tracker measures β_eff on the last 256 training samples and records the validation
accuracy; ``tracker.predict()`` extrapolates the accuracy to β_eff = 0 (Algorithm 1).
"""
import json

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

import ncap

torch.set_num_threads(1)  # a tiny MLP trains fastest on one thread (and shares the machine well)


def digits(seed=0):
    """Standardised digits: x_train (1257, 64), x_val (540, 64) float32, y_train, y_val int64."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    as_tensor = lambda a: torch.tensor(scaler.transform(a), dtype=torch.float32)
    return as_tensor(x_train), as_tensor(x_val), torch.tensor(y_train), torch.tensor(y_val)


def train_probe(lr, epochs=12, seed=0, report=None):
    """Train a 64-32-16-16-10 MLP with AdamW; ``report(epoch, tracker)`` runs after every observation
    (it may raise to stop the run). Returns the tracker."""
    x_train, x_val, y_train, y_val = digits(seed)
    torch.manual_seed(seed)
    probe = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                          nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10))
    tracker = ncap.BetaEffTracker(probe, variant="support", batch_size=256)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
    for epoch in range(epochs):
        probe.train()
        for idx in torch.randperm(len(y_train)).split(64):
            loss = F.cross_entropy(probe(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tracker.collect(x_train[idx], y_train[idx])  # the window β_eff is measured on
        probe.eval()
        with torch.no_grad():
            accuracy = (probe(x_val).argmax(1) == y_val).float().mean().item()
        tracker.observe(epoch, accuracy)
        if report is not None:
            report(epoch, tracker)
    return tracker


if __name__ == "__main__":
    tracker = train_probe(lr=1e-2, epochs=6)
    prediction = tracker.predict()
    print(f"after 6 epochs: val accuracy {tracker.val_accuracy[-1]:.3f}, beta_eff {tracker.beta_eff['support'][-1]:.2e}")
    print(f"predicted final accuracy {prediction.accuracy:.3f} ± {prediction.std:.3f} ({prediction.method})")
    # checkpoint and resume: the state is plain JSON-able Python; a tracker with the same settings loads it
    state = json.loads(json.dumps(tracker.state_dict()))
    resumed = ncap.BetaEffTracker(tracker.probe, variant="support", batch_size=256)
    resumed.load_state_dict(state)
    assert resumed.predict() == prediction
