import { greet } from 'lib/greet';

document.getElementById('greeting').textContent = greet('visitor');
