// The shop's entry point. `lib/greet` comes through the import map; the
// formatter is imported by relative URL, as production code often is.
import { greet, source } from 'lib/greet';
import { money } from './lib/format.js';

document.getElementById('greeting').textContent = greet('shopper');
document.getElementById('total').textContent = `Basket total: ${money(42)}`;
document.getElementById('build').textContent = `greet.js from ${source}`;
