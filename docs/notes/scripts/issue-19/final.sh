#!/bin/bash
# usage: STEPS=500,...,3500 final.sh   analysis of the MNIST study's conv1 over training
cd /work/topo
STEPS=${STEPS:-500,1000,1500,2000,2500,3000,3500,4000,4500,5000}
/usr/bin/time -v env COLUMNS=200 /work/main/.venv/bin/convlens topology analyze ${NETS:-mnist} --step $STEPS --layer conv1 --k 50 --p 0.3 --resolution 15 --gain 3 --out /work/topo/mnist_an --overwrite > /work/topo/mnist_an.log 2>&1
grep -E "Elapsed|Maximum resident|User time" /work/topo/mnist_an.log
python3 /work/topo/table.py /work/topo/mnist_an > /work/topo/mnist_table.md
cat /work/topo/mnist_table.md
for f in mapper barcode angle; do cp /work/topo/mnist_an/${f}_grid.png /work/main/docs/notes/img/issue-19/mnist-conv1-${f}s.png; done
ls -la /work/main/docs/notes/img/issue-19/mnist-*
/work/main/.venv/bin/python /work/topo/moved.py "M(64,0,64)" pt mnist
